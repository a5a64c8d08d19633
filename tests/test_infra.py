"""The deployment files agree with the code and with each other, checked without starting Ray:
job configs load into their stages' dataclasses, every ``python -m jobs.X --config Y`` named in
the manifests and config comments exists and loads, one image name everywhere, the image's
torch and ray pins are pyproject's, the KubeRay manifests ask for GPUs and use the Secret the
example defines, the AWS cluster config passes Ray's own schema, the image runs as non-root,
the stage entrypoints parse their arguments and call their stage, and the runbook
(infra/README.md) names what exists and carries the sizing table infra/sizing.py computes."""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from pipeline.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
CONFIGS = REPO / "jobs" / "configs"
DOCKERFILE = INFRA / "Dockerfile"
REQUIREMENTS = INFRA / "requirements-cluster.txt"
KUBERAY = INFRA / "kuberay"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAYJOBS = (KUBERAY / "rayjob-train.yaml", KUBERAY / "rayjob-run.yaml")
SECRET = KUBERAY / "secret-example.yaml"
AWS_CLUSTER = INFRA / "aws" / "cluster.yaml"

INFRA_YAML = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
CONFIG_YAML = sorted(CONFIGS.glob("*.yaml"))
NEW_ENTRYPOINTS = ("tables", "prepare", "train", "eval")
#: the cluster configs, each submitted with ``python -m jobs.X`` (the older local configs,
#: starter.yaml and train_small.yaml, are run with ``colorize``; they only need to load)
CLUSTER_CONFIGS = (
    "tables_coco_s3.yaml",
    "prepare_coco_s3.yaml",
    "train_seg_1x8gpu.yaml",
    "train_seg_2nodes.yaml",
    "run_s3_gpu.yaml",
    "eval_coco_val.yaml",
)

#: config file name prefix -> (module of the stage, its config dataclass, its job module)
STAGES = {
    "tables_": ("pipeline.tables_stage", "TablesConfig", "jobs.tables"),
    "prepare_": ("pipeline.prepare_stage", "PrepareConfig", "jobs.prepare"),
    "train_": ("pipeline.train_stage", "TrainConfig", "jobs.train"),
    "starter": ("pipeline.train_stage", "TrainConfig", "jobs.train"),
    "run_": ("pipeline.run_stage", "RunConfig", "jobs.run"),
    "eval_": ("pipeline.eval_stage", "EvalConfig", "jobs.eval"),
}


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(path: Path) -> dict[str, Any]:
    (doc,) = _docs(path)
    return doc


def _stage_of(config: Path) -> tuple[str, str, str]:
    for prefix, stage in STAGES.items():
        if config.name.startswith(prefix):
            return stage
    pytest.fail(f"{_rel(config)}: no stage for this file name (prefixes: {sorted(STAGES)})")


def _dataclass(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


def _pyproject_pins() -> dict[str, str]:
    """``{name: version}`` of pyproject's exactly pinned (``==``) dependencies."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        req = Requirement(dep)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[req.name.lower()] = exact[0]
    return pins


def _walk(node: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in a parsed YAML document."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found += _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v, key)
    return found


def _cluster_specs() -> list[tuple[str, dict]]:
    """(where, RayClusterSpec) of the RayCluster and of each RayJob."""
    specs = [(_rel(RAYCLUSTER), _one(RAYCLUSTER)["spec"])]
    specs += [(_rel(p), _one(p)["spec"]["rayClusterSpec"]) for p in RAYJOBS]
    return specs


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# --- every YAML parses ------------------------------------------------------------------------
def test_the_files_are_there():
    for p in (DOCKERFILE, REQUIREMENTS, RAYCLUSTER, *RAYJOBS, SECRET, AWS_CLUSTER):
        assert p.is_file(), p
    for stage in NEW_ENTRYPOINTS:
        assert (REPO / "jobs" / f"{stage}.py").is_file()


@pytest.mark.parametrize("path", INFRA_YAML + CONFIG_YAML, ids=_rel)
def test_yaml_parses(path: Path):
    docs = _docs(path)
    assert docs, f"{_rel(path)} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs), f"{_rel(path)}: a document is not a mapping"


# --- job configs --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIG_YAML, ids=_rel)
def test_config_loads_into_its_stage_dataclass(path: Path):
    module, name, _ = _stage_of(path)
    cls = _dataclass(module, name)
    cfg = load_config(cls, path)  # unknown keys and ill-typed values raise
    assert type(cfg) is cls


@pytest.mark.parametrize("path", CONFIG_YAML, ids=_rel)
def test_config_starts_with_a_comment(path: Path):
    assert path.read_text().startswith("#"), f"{_rel(path)}: no comment saying what it is for"


@pytest.mark.parametrize("name", CLUSTER_CONFIGS)
def test_cluster_config_comment_gives_its_submit_command(name: str):
    path = CONFIGS / name
    text = path.read_text()
    comment = text[: text.index("\n" + next(ln for ln in text.splitlines() if ln[:1].isalpha()))]
    assert "ray job submit --working-dir . -- python -m" in _join_continued(comment)
    _, _, job = _stage_of(path)
    command = f"python -m {job} --config jobs/configs/{path.name}"
    assert command in _join_continued(comment), f"{_rel(path)}'s comment lacks `{command}`"


# --- job commands named in the manifests and comments -------------------------------------------
COMMAND = re.compile(r"python -m (jobs\.[A-Za-z_]\w*)(?: +--config +(\S+))?([^\n]*)")


def _join_continued(text: str) -> str:
    """Shell lines continued with a backslash, in comments or not, joined into one line."""
    return re.sub(r"[ \t]*\\\n[ \t]*#?[ \t]*", " ", text)


def _command_sources() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file()]
    files += CONFIG_YAML
    files += sorted((REPO / "jobs").glob("*.py"))
    return sorted(files)


def _commands() -> list[tuple[str, str, str | None, list[str]]]:
    """(file, job module, config path or None, key=value overrides) of each job command."""
    found = []
    for path in _command_sources():
        text = _join_continued(path.read_text())
        for m in COMMAND.finditer(text):
            overrides = []
            try:
                words = shlex.split(m.group(3))
            except ValueError:  # an unbalanced quote further along the line
                words = m.group(3).split()
            for word in words:
                if not re.match(r"^[A-Za-z_][\w.]*=", word):
                    break
                overrides.append(word)
            found.append((_rel(path), m.group(1), m.group(2), overrides))
    return found


def test_job_commands_are_found_in_every_manifest_and_config():
    files = {f for f, *_ in _commands()}
    for p in (RAYCLUSTER, *RAYJOBS, AWS_CLUSTER, *(CONFIGS / n for n in CLUSTER_CONFIGS)):
        assert _rel(p) in files, f"no `python -m jobs.X --config ...` in {_rel(p)}"
    for p in RAYJOBS:
        entry = _one(p)["spec"]["entrypoint"]
        assert COMMAND.fullmatch(entry), f"{_rel(p)}: entrypoint {entry!r}"


@pytest.mark.parametrize(
    "where, job, config, overrides",
    _commands(),
    ids=[f"{c[0]}:{c[1]}:{Path(c[2] or '-').name}" for c in _commands()],
)
def test_job_command_names_an_existing_module_and_config(where, job, config, overrides):
    module_file = REPO / Path(*job.split(".")).with_suffix(".py")
    assert module_file.is_file(), f"{where}: `python -m {job}` but there is no {_rel(module_file)}"
    assert config is not None, f"{where}: `python -m {job}` without --config"
    assert config.endswith(".yaml") and (REPO / config).is_file(), f"{where}: no config {config}"
    assert (REPO / config).parent == CONFIGS, f"{where}: {config} is not under jobs/configs/"
    mod, cls, expected_job = _stage_of(REPO / config)
    assert job == expected_job, f"{where}: {config} is a {cls}, run by {expected_job}, not {job}"
    load_config(_dataclass(mod, cls), REPO / config, overrides)  # overrides must be fields too


def test_train_job_checkpoints_go_to_object_storage():
    from pipeline.train_stage import TrainConfig

    for where, job, config, overrides in _commands():
        if job == "jobs.train" and where.startswith("infra/kuberay/"):
            cfg = load_config(TrainConfig, REPO / config, overrides)
            assert cfg.storage_path.startswith("s3://"), f"{where}: {cfg.storage_path}"
    for name in ("train_seg_1x8gpu.yaml", "train_seg_2nodes.yaml"):
        cfg = load_config(TrainConfig, CONFIGS / name)
        assert cfg.storage_path == "s3://colorization-runs/checkpoints"
        assert cfg.use_gpu and cfg.model.name == "seg" and cfg.model.base_width == 64
        assert cfg.crop == 256 and cfg.max_failures > 0
    assert load_config(TrainConfig, CONFIGS / "train_seg_1x8gpu.yaml").num_workers == 8
    assert load_config(TrainConfig, CONFIGS / "train_seg_2nodes.yaml").num_workers == 16


# --- the image --------------------------------------------------------------------------------
def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in _dockerfile().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for ln in text.splitlines():
        if ln.strip():
            word, _, rest = ln.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )


def test_dockerfile_pins_torch_and_ray_as_pyproject():
    pins = _pyproject_pins()
    args = _args()
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["RAY_VERSION"] == pins["ray"]
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "torch==${TORCH_VERSION}" in runs
    assert re.search(r"ray\[[\w,]+\]==\$\{RAY_VERSION\}", runs)
    # any literal pin anywhere in the file (comments included) is pyproject's version too
    for name in ("torch", "ray"):
        for version in re.findall(rf"\b{name}(?:\[[\w,]+\])?==([0-9][\w.]*)", _dockerfile()):
            assert version == pins[name], f"Dockerfile pins {name}=={version}"


def test_dockerfile_installs_the_cuda_build_of_torch_on_a_cuda_base():
    (base,) = [rest for word, rest in _instructions() if word == "FROM"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    index = _args()["TORCH_INDEX_URL"]
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index)
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    assert any("${TORCH_INDEX_URL}" in r and "torch==${TORCH_VERSION}" in r for r in runs)
    assert any(re.search(r"pip install( -\S+)* \.(\s|$)", r) for r in runs), "no `pip install .`"
    assert any(word == "WORKDIR" for word, _ in _instructions())
    assert any(word == "CMD" for word, _ in _instructions())


def test_dockerfile_runs_as_non_root_uid_1000():
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users, "the Dockerfile sets no USER"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), f"last USER is {users[-1]}"
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    made = re.search(r"useradd\b[^&;]*--uid 1000\b[^&;]*?(\w+)\s*(&&|;|$)", runs)
    assert made, "no user with uid 1000 is made"
    assert user in ("1000", made.group(1)), f"USER {user} is not the uid-1000 user"


def test_cluster_requirements_are_pinned_as_pyproject():
    pins = _pyproject_pins()
    reqs = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    assert reqs
    for req in reqs:
        ops = [s.operator for s in req.specifier]
        assert ops == ["=="], f"{req} is not pinned exactly"
    by_name = {r.name.lower(): next(iter(r.specifier)).version for r in reqs}
    for name in ("torch", "ray"):
        assert by_name.get(name, pins[name]) == pins[name], f"{name}: {by_name[name]}"
    assert "ray" in by_name


def _image_references() -> dict[str, set[str]]:
    """{file: the image names it uses}: every container of the KubeRay manifests (submitter
    pod included), the cluster launcher's docker images, the Dockerfile's build command."""
    images = {_rel(p): set(_walk(_one(p), "image")) for p in (RAYCLUSTER, *RAYJOBS)}
    aws = _one(AWS_CLUSTER)
    dockers = [aws["docker"], *(t.get("docker", {}) for t in aws["available_node_types"].values())]
    images[_rel(AWS_CLUSTER)] = {
        d[k] for d in dockers for k in ("image", "head_image", "worker_image") if k in d
    }
    images[_rel(DOCKERFILE)] = set(re.findall(r"docker build\b[^\n]*?-t (\S+)", _dockerfile()))
    return images


def test_one_image_name_everywhere_tagged_with_the_project_version():
    images = _image_references()
    for where, names in images.items():
        assert names, f"{where} names no image"
    every = set().union(*images.values())
    assert len(every) == 1, f"different images: {images}"
    (image,) = every
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert image.rsplit(":", 1)[-1] == version, f"{image}: tag is not the project's {version}"


# --- KubeRay ------------------------------------------------------------------------------------
def test_rayclusters_run_pyprojects_ray_with_autoscaling():
    ray_version = _pyproject_pins()["ray"]
    assert _one(RAYCLUSTER)["kind"] == "RayCluster"
    for where, spec in _cluster_specs():
        assert str(spec["rayVersion"]) == ray_version, f"{where}: rayVersion {spec['rayVersion']}"
        assert spec["enableInTreeAutoscaling"] is True, where
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0", where
        for c in head["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in str(c.get("resources", {})), f"{where}: GPU head"
        for g in spec["workerGroupSpecs"]:
            assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], where
            assert g["maxReplicas"] >= 1


def test_gpu_worker_groups_request_gpus():
    for where, spec in _cluster_specs():
        gpu_groups = []
        for g in spec["workerGroupSpecs"]:
            for c in g["template"]["spec"]["containers"]:
                limits = c.get("resources", {}).get("limits", {})
                if "nvidia.com/gpu" in limits:
                    assert int(limits["nvidia.com/gpu"]) >= 1
                    requests = c["resources"].get("requests", {})
                    gpus = requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"])
                    assert gpus == limits["nvidia.com/gpu"], f"{where}: GPU requests != limits"
                    gpu_groups.append(g["groupName"])
        assert gpu_groups, f"{where}: no worker group with nvidia.com/gpu limits"
        # 8 GPUs a node, as the train configs (8 workers a node) and run_s3_gpu.yaml assume
        gpus = {
            int(c["resources"]["limits"]["nvidia.com/gpu"])
            for g in spec["workerGroupSpecs"]
            for c in g["template"]["spec"]["containers"]
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
        }
        assert gpus == {8}, where
    (group,) = [g for g in _one(RAYCLUSTER)["spec"]["workerGroupSpecs"] if "gpu" in g["groupName"]]
    assert group["maxReplicas"] >= 2, "train_seg_2nodes.yaml needs 2 GPU nodes"


def test_secret_is_referenced_by_the_name_the_example_defines():
    secret = _one(SECRET)
    assert secret["kind"] == "Secret"
    name = secret["metadata"]["name"]
    data = secret.get("stringData") or secret.get("data")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(data)
    assert all("REPLACE" in str(v) for v in data.values()), "example values must be placeholders"
    assert "EXAMPLE" in SECRET.read_text().upper()
    for where, spec in _cluster_specs():
        refs = [r["name"] for r in _walk(spec, "secretRef") + _walk(spec, "secretKeyRef")]
        assert refs, f"{where} references no Secret"
        assert set(refs) == {name}, f"{where} references {set(refs)}, the example defines {name}"
        for c in _containers(spec):
            via = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            via += [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            ]
            assert via, f"{where}: container {c['name']} gets no S3 credentials"


def test_rayjobs_run_a_job_and_shut_their_cluster_down():
    for p in RAYJOBS:
        job = _one(p)
        assert job["kind"] == "RayJob", p
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert runtime_env["working_dir"], p
        assert runtime_env["env_vars"], p
        assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())
    entries = {p.name: _one(p)["spec"]["entrypoint"] for p in RAYJOBS}
    assert "jobs/configs/train_seg_1x8gpu.yaml" in entries["rayjob-train.yaml"]
    assert "jobs/configs/run_s3_gpu.yaml" in entries["rayjob-run.yaml"]


def test_working_dir_in_the_image_holds_the_jobs():
    """RayJobs upload working_dir from the submitter pod (the head's image): it must be where
    the Dockerfile puts the project tree."""
    workdirs = [rest for word, rest in _instructions() if word == "WORKDIR"]
    for p in RAYJOBS:
        working_dir = yaml.safe_load(_one(p)["spec"]["runtimeEnvYAML"])["working_dir"]
        if "://" not in working_dir:
            assert working_dir == workdirs[-1], f"{_rel(p)}: {working_dir} vs {workdirs[-1]}"
    copied = " ".join(rest for word, rest in _instructions() if word == "COPY")
    for needed in ("jobs", "pipeline", "colorization", "pyproject.toml"):
        assert needed in copied


# --- AWS cluster launcher ---------------------------------------------------------------------
def test_aws_cluster_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _one(AWS_CLUSTER)
    validate_config(prepare_config(copy.deepcopy(raw)))  # the checks `ray up` makes first
    assert raw["provider"]["type"] == "aws" and raw["provider"]["region"]
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert not head.get("resources", {}).get("GPU"), "the head should be a CPU node"
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 8]
    assert gpu, "no worker type with 8 GPUs"
    assert all(t["max_workers"] >= 2 and t["min_workers"] >= 0 for t in gpu)
    assert raw["head_start_ray_commands"] and raw["worker_start_ray_commands"]
    assert any("--head" in c for c in raw["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in raw["worker_start_ray_commands"])


# --- the entrypoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("stage", NEW_ENTRYPOINTS)
def test_entrypoint_help_exits_0(stage: str, capsys):
    main = importlib.import_module(f"jobs.{stage}").main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "overrides" in out


@pytest.mark.parametrize("stage", NEW_ENTRYPOINTS)
def test_entrypoint_without_config_is_a_usage_error(stage: str, capsys):
    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"jobs.{stage}").main([])
    assert e.value.code == 2


def _fresh_python(code: str) -> str:
    """``code`` run by a fresh interpreter in the repository; its stdout (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_entrypoint_help_does_not_import_the_stage():
    """``--help`` answers before torch or a stage module is imported (a fresh interpreter)."""
    code = (
        "import sys\n"
        f"for stage in {NEW_ENTRYPOINTS!r}:\n"
        "    main = __import__(f'jobs.{stage}', fromlist=['main']).main\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (stage, e.code)\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.endswith('_stage'))\n"
        "print('HEAVY', heavy)\n"
    )
    assert "HEAVY []" in _fresh_python(code), code


FAKE_RESULTS = {
    "tables": (
        "build_tables",
        {"n_listed": 3, "n_ok": 2, "n_failed": 1, "failures": [{"uri": "x.jpg", "error": "bad"}]},
    ),
    "prepare": (
        "prepare",
        {
            "size": 288,
            "n_listed": 3,
            "n_ok": 2,
            "n_skipped": 0,
            "n_error": 1,
            "seconds": 1.0,
            "labels": [],
            "failures": [{"key": "x.jpg", "status": "error", "error": "bad"}],
        },
    ),
    "train": ("train", {"metrics": {"step": 10}, "checkpoint": "s3://b/c", "run_dir": "runs/x"}),
    "eval": ("evaluate", {"images": 2, "rows": []}),
}
STAGE_MODULES = {"tables": "tables_stage", "prepare": "prepare_stage", "train": "train_stage",
                 "eval": "eval_stage"}  # fmt: skip
STAGE_CONFIGS = {
    "tables": ("tables_coco_s3.yaml", ["out=/tmp/x"]),
    "prepare": ("prepare_coco_s3.yaml", ["out=/tmp/x", "size=256"]),
    "train": ("train_seg_1x8gpu.yaml", ["num_workers=16", "model.base_width=32"]),
    "eval": ("eval_coco_val.yaml", ["out=/tmp/x", "limit=5"]),
}


@pytest.mark.parametrize("stage", NEW_ENTRYPOINTS)
def test_entrypoint_loads_the_config_calls_its_stage_and_prints_json(
    stage: str, monkeypatch, capsys
):
    """The stage function replaced by a recorder: no Ray, no data; the wiring is checked."""
    stage_module = importlib.import_module(f"pipeline.{STAGE_MODULES[stage]}")
    function, result = FAKE_RESULTS[stage]
    calls = []

    def fake(cfg):
        calls.append(cfg)
        return copy.deepcopy(result)

    monkeypatch.setattr(stage_module, function, fake)
    job = importlib.import_module(f"jobs.{stage}")
    joined = []
    if hasattr(job, "connect"):  # the entrypoint joins Ray: recorded, none started here
        monkeypatch.setattr(job, "connect", lambda **kw: joined.append(kw) or True)
    name, overrides = STAGE_CONFIGS[stage]
    config = CONFIGS / name
    mod, cls, _ = _stage_of(config)
    code = job.main(["--config", str(config), *overrides])
    assert code == 0
    assert len(joined) == (stage != "eval"), joined  # the evaluation runs without Ray
    (cfg,) = calls
    assert cfg == load_config(_dataclass(mod, cls), config, overrides)
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout is exactly one JSON document
    if stage in ("tables", "prepare"):
        assert printed["n_listed"] == 3
        assert "failures" not in printed  # listed on stderr instead
        assert "x.jpg" in captured.err
    elif stage == "train":
        assert printed == result
    else:
        assert printed["images"] == 2 and printed["report"] == "/tmp/x/report.html"


# --- the runbook and its sizing table ---------------------------------------------------------
README = INFRA / "README.md"
SIZING_MARKERS = ("<!-- sizing:begin -->\n", "\n<!-- sizing:end -->")
RUNBOOK_STAGES = ("prepare", "tables", "train", "eval", "run")


@functools.cache
def _sizing() -> ModuleType:
    """infra/sizing.py (a script, not a package module), imported once."""
    spec = importlib.util.spec_from_file_location("infra_sizing", INFRA / "sizing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_runbook_sizing_table_is_the_scripts_output():
    text = README.read_text()
    begin, end = SIZING_MARKERS
    assert text.count(begin) == 1 and text.count(end) == 1, "one pair of sizing markers"
    pasted = text[text.index(begin) + len(begin) : text.index(end)]
    assert pasted == _sizing().sizing_table(), "run `python infra/sizing.py` and paste its table"


def test_sizing_script_prints_the_table_without_ray_or_torch():
    code = (
        "import runpy, sys\n"
        "runpy.run_path('infra/sizing.py', run_name='__main__')\n"
        "print('HEAVY', sorted(m for m in ('ray', 'torch', 'numpy') if m in sys.modules))\n"
    )
    assert _fresh_python(code) == _sizing().sizing_table() + "\nHEAVY []\n"


def test_runbook_names_existing_files_configs_and_jobs():
    text = README.read_text()
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file() and p != README):
        if "__pycache__" not in path.parts:
            assert f"`{path.relative_to(INFRA).as_posix()}`" in text, f"{_rel(path)} not described"
    named = set(re.findall(r"jobs/configs/[\w.-]+\.yaml", text))
    assert named >= {f"jobs/configs/{n}" for n in CLUSTER_CONFIGS}
    for config in named:
        assert (REPO / config).is_file(), f"infra/README.md names {config}, which is not there"
    for job in set(re.findall(r"python -m (jobs\.\w+)", text)):
        assert (REPO / Path(*job.split("."))).with_suffix(".py").is_file(), job
    submit = (
        "ray job submit --address http://HEAD:8265 --working-dir . --runtime-env "
        "jobs/runtime_env.yaml -- python -m jobs.{} --config"
    )
    for stage in RUNBOOK_STAGES:
        assert submit.format(stage) in text, f"no submit command for jobs.{stage}"


def test_sizing_figures_are_the_benchmarks():
    s, docs = _sizing(), (REPO / "docs" / "benchmarks.md").read_text()
    assert "2 vCPUs" in docs and "no GPU" in docs and s.MEASURED_CPUS == 2
    rows = {
        s.TABLES_IMAGES_PER_S: r"\| 288 COCO JPEGs x 3 \(864\) \|[^|\n]*\|[^|\n]*\| {} \|",
        s.TRAIN_SMALL_IMAGES_PER_S: r"\| 2 Ray Train workers \(DDP over gloo\) \| {} ",
        s.TRAIN_SMALL_256_IMAGES_PER_S: r"\| seg \| 2\.09 M \| [\d.]+ \| {} \|",
        s.RUN_IMAGES_PER_S: r"\| `colorize run`, 1,000 inputs \| {} \|",
        s.RUN_MODEL_ONLY_IMAGES_PER_S: r"\| bare model loop [^|\n]*\| {} \|",
    }
    for value, pattern in rows.items():
        assert re.search(pattern.format(re.escape(str(value))), docs), (value, pattern)


def test_flop_counts_are_the_models():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from colorization.models import create_model
    from colorization.shipped import DEFAULT_MODEL, load

    s = _sizing()

    def gflop(model: torch.nn.Module, x: torch.Tensor) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 1e9

    for width, classes, side, encoder, expected in (
        (16, 247, 128, "scratch", s.SEG_SMALL_128_GFLOP),
        (16, 247, 256, "scratch", s.SEG_SMALL_256_GFLOP),
        (64, 313, 256, "lite0", s.SEG_FULL_256_GFLOP),  # train_seg_*.yaml's model
    ):
        with torch.device("meta"):  # shapes only: no memory, no compute
            kwargs = dict(num_classes=classes, num_categories=80, encoder=encoder)
            model = create_model("seg", base_width=width, pretrained=False, **kwargs)
            x = torch.empty(1, 1, side, side)
        assert gflop(model, x) == pytest.approx(expected, rel=0.01), (width, classes, side)
    shipped, _, _ = load(DEFAULT_MODEL)
    assert gflop(shipped, torch.zeros(1, 1, 256, 256)) == pytest.approx(
        s.SHIPPED_256_GFLOP, rel=0.01
    )


def test_flop_scaling_agrees_with_the_other_measured_crop():
    """The 256 px figure, scaled by FLOPs, gives about the CPU rate the 128 px run gave."""
    s = _sizing()
    at_256 = (
        s.TRAIN_SMALL_256_IMAGES_PER_S
        * s.TRAIN_FORWARDS_PER_STEP
        * s.SEG_SMALL_256_GFLOP
        / s.MEASURED_CPUS
    )
    assert at_256 == pytest.approx(s.CPU_TRAIN_GFLOPS_PER_CPU, rel=0.15)


@pytest.mark.parametrize("stage", ["tables", "train", "run"])
@pytest.mark.parametrize("images, hours", [(118_287, 0.01), (5_914_350, 24.0), (10**6, 1.0)])
def test_cores_for_inverts_the_wall_time(stage: str, images: int, hours: float):
    s = _sizing()

    def wall(cpus: int) -> float:
        if cpus == 0:
            return math.inf
        rate = s.IMAGES_PER_S_PER_CPU[stage] * cpus * s.SCALING_EFFICIENCY
        return s.wall_hours(images, rate)

    n = s.cores_for(images, hours, stage)
    assert wall(n) <= hours < wall(n - 1), (n, wall(n), wall(n - 1))
    assert s.cpu_images_per_s(stage, n, nodes=2) >= images / hours / 3600  # several nodes


def test_doubling_nodes_halves_the_wall_time_less_the_efficiency():
    s = _sizing()
    cpus = s.CPU_NODE.cpus
    for stage in ("tables", "train", "run"):
        t = {n: s.wall_hours(10**6, s.cpu_images_per_s(stage, cpus * n, n)) for n in (1, 2, 4, 8)}
        assert t[2] / t[1] == pytest.approx(1 / (2 * s.SCALING_EFFICIENCY))
        assert t[4] / t[2] == pytest.approx(0.5) and t[8] / t[4] == pytest.approx(0.5)
    one, two = (s.gpu_train_images_per_s(s.GPU_NODE.gpus * n, n) for n in (1, 2))
    assert two / one == pytest.approx(2 * s.SCALING_EFFICIENCY)
    assert 0 < s.SCALING_EFFICIENCY <= 1 and 0 < s.ASSUMED_GPU_UTILIZATION <= 1


def test_sizing_rows_are_labelled_and_priced():
    s = _sizing()
    rows = s.estimates()
    assert {r.node for r in rows} == {s.CPU_NODE, s.GPU_NODE}
    jobs = {r.job.split(",")[0]: r.images for r in rows}
    assert jobs == {
        "tables": s.COCO_TRAIN2017_IMAGES,
        "train seg (width 64": s.COCO_TRAIN2017_IMAGES * s.TRAIN_EPOCHS,
        "run": s.ARCHIVE_IMAGES,
    }
    for r in rows:
        assert r.hours == pytest.approx(r.images / r.images_per_s / 3600)
        per_hour = r.nodes * r.node.usd_per_hour + s.HEAD_NODE.usd_per_hour
        assert r.usd == pytest.approx(r.hours * per_hour)
        assert r.images_per_s <= s.S3_GETS_PER_S_PER_PREFIX or r.job.startswith("train"), r
        if r.node.gpus:  # no GPU was measured: every GPU row says it is an estimate
            assert r.basis.startswith("ESTIMATE"), r
        else:
            assert "ESTIMATE" not in r.basis, r
    table = s.sizing_table()
    assert "assumed" in table.lower() and "check your provider" in table
    assert s.MEASURED_ON in table


def test_sizing_nodes_are_the_clusters():
    s = _sizing()
    kuberay = {g["groupName"]: g for g in _one(RAYCLUSTER)["spec"]["workerGroupSpecs"]}
    aws = _one(AWS_CLUSTER)["available_node_types"]

    def requests(group: dict) -> dict:
        (container,) = group["template"]["spec"]["containers"]
        return container["resources"]["requests"]

    gpu, cpu = kuberay["gpu-8x"], kuberay["cpu"]
    assert (
        s.GPU_NODE.instance
        == gpu["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]
    )
    assert s.GPU_NODE.instance == aws["gpu_8x"]["node_config"]["InstanceType"]
    assert s.GPU_NODE.cpus == int(requests(gpu)["cpu"])
    assert (
        s.GPU_NODE.gpus == int(requests(gpu)["nvidia.com/gpu"]) == aws["gpu_8x"]["resources"]["GPU"]
    )
    assert s.CPU_NODE.instance == aws["cpu_16"]["node_config"]["InstanceType"]
    assert s.CPU_NODE.cpus == int(requests(cpu)["cpu"]) == aws["cpu_16"]["resources"]["CPU"]
    assert s.HEAD_NODE.instance == aws["head_cpu"]["node_config"]["InstanceType"]
    for r in s.estimates():
        group, aws_type = (gpu, "gpu_8x") if r.node.gpus else (cpu, "cpu_16")
        assert r.nodes <= min(group["maxReplicas"], aws[aws_type]["max_workers"]), r
    run = load_config(_dataclass("pipeline.run_stage", "RunConfig"), CONFIGS / "run_s3_gpu.yaml")
    assert (run.workers, run.cpus_per_worker) == (s.RUN_GPU_ACTORS, s.RUN_GPU_CPUS_PER_ACTOR)
    assert run.gpus_per_worker * run.workers <= s.GPU_NODE.gpus


RUNTIME_ENVS = [REPO / "jobs" / "runtime_env.yaml", REPO / "jobs" / "runtime_env_pip.yaml"]


@pytest.mark.parametrize("path", RUNTIME_ENVS, ids=lambda p: p.name)
def test_runtime_env_passes_rays_validation_and_carries_no_credentials(path: Path):
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(path.read_text())
    RuntimeEnv(**env)  # Ray's own checks of every field
    assert env["working_dir"] == "."
    assert not {k for k in env["env_vars"] if "SECRET" in k or k == "AWS_ACCESS_KEY_ID"}
    assert env["env_vars"]["AWS_RETRY_MODE"] in ("standard", "adaptive")


def test_pip_runtime_env_lists_pyprojects_dependencies_with_its_pins():
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
    env = yaml.safe_load(RUNTIME_ENVS[1].read_text())
    listed = [Requirement(p) for p in env["pip"]["packages"]]
    assert {(r.name, str(r.specifier), tuple(sorted(r.extras))) for r in listed} == {
        (r.name, str(r.specifier), tuple(sorted(r.extras))) for r in deps
    }


def test_runbook_submits_with_the_runtime_env():
    text = (INFRA / "README.md").read_text()
    submits = [line for line in text.splitlines() if line.lstrip().startswith("ray job submit")]
    assert submits and all("--runtime-env jobs/runtime_env.yaml" in s for s in submits)


def test_rayjobs_runtime_env_has_the_runtime_env_files_variables():
    wanted = yaml.safe_load(RUNTIME_ENVS[0].read_text())["env_vars"]
    for path in RAYJOBS:
        env = yaml.safe_load(_one(path)["spec"]["runtimeEnvYAML"])
        assert wanted.items() <= env["env_vars"].items(), _rel(path)


def test_runbook_cores_for_example_is_the_scripts():
    m = re.search(r"in one hour need (\d+) Ray CPUs", README.read_text())
    assert m and int(m.group(1)) == _sizing().cores_for(1_000_000, 1, "run")
