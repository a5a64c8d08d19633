"""``colorize --help``: fast, without torch, and every command listed with its summary."""

import os
import subprocess
import sys
import time

import pytest

from pipeline.cli import COMMANDS, TABLES_COMMANDS

pytestmark = pytest.mark.timeout(120)

#: a second on a quiet machine; the margin is for a loaded CI runner, torch's absence is the
#: real check (importing torch alone takes longer than this)
HELP_SECONDS = 1.5


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )


def test_help_is_fast_imports_no_stage_and_lists_every_command():
    code = (
        "import sys\n"
        "from pipeline.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['torch', 'ray', 'pyarrow', 'numpy', 'boto3', 'pipeline.commands']\n"
        "print('loaded:', *[m for m in heavy if m in sys.modules])\n"
    )
    _python("pass")  # the interpreter and its file cache warm
    start = time.perf_counter()
    out = _python(code).stdout
    seconds = time.perf_counter() - start
    assert out.rstrip().splitlines()[-1] == "loaded:"
    assert seconds < HELP_SECONDS, f"colorize --help took {seconds:.2f} s"
    for name, summary in COMMANDS.items():
        assert name in out and summary.split()[0] in out, name


def test_every_listed_command_exists_with_its_summary():
    from typer.testing import CliRunner

    from pipeline.cli import app

    for name, summary in COMMANDS.items():
        res = CliRunner().invoke(app, [name, "--help"], terminal_width=400)
        assert res.exit_code == 0, (name, res.output)
        assert " ".join(summary.split()) in " ".join(res.output.replace("│", " ").split()), name
    res = CliRunner().invoke(app, ["tables", "--help"], terminal_width=400)
    assert all(name in res.output for name in TABLES_COMMANDS)


def test_help_texts_show_the_configs_defaults():
    from dataclasses import fields

    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.run_stage import RunConfig

    res = CliRunner().invoke(app, ["run", "--help"], terminal_width=400)
    out = " ".join(res.output.replace("│", " ").split())  # rich's boxes wrap long help
    workers = next(f.default for f in fields(RunConfig) if f.name == "workers")
    assert f"[default: {workers}]" in out
    from colorization.shipped import DEFAULT_TEMPERATURE

    assert f"else {DEFAULT_TEMPERATURE}" in out
