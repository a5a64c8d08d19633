"""Colorize black-and-white photos, or train and score the models that do it.

Start with "colorize demo"; "colorize COMMAND --help" says more about each command.
"""

from __future__ import annotations

import functools

import click
import typer
from typer.core import TyperGroup

#: every command and what it does for its user, in the order ``colorize --help`` lists them;
#: the commands themselves are in :mod:`pipeline.commands`, loaded only when one runs
COMMANDS = {
    "image": "Colorize photos on this computer; the results are PNG files of the same size.",
    "video": "Colorize video files; the colour follows the motion instead of flickering, "
    "and the sound is kept.",
    "run": "Colorize a whole archive (a folder or an S3 bucket) into another, with a record "
    "of every photo; a rerun resumes where it stopped.",
    "demo": "Colorize the sample photos that come with the package and show before and after.",
    "eval": "Score models on colour photos made grey: how close their colours come to the "
    "real ones; writes a report.",
    "prepare": 'Turn a set of colour photos into training data for "colorize train".',
    "train": "Train a colorization model, on this computer or a Ray cluster.",
    "export-model": "Make a trained model ready to ship: its weights and a model card.",
    "tables": "Build or inspect the table of colours a model chooses from.",
}
TABLES_COMMANDS = {
    "build": "Count the colours of a set of photos and write the table of colour classes.",
    "show": "Print what a table holds and where it came from.",
}


class LazyCommands(TyperGroup):
    """The ``colorize`` group: it lists :data:`COMMANDS` from their summaries alone, so that
    ``colorize --help`` imports neither the stages nor torch, Ray or pyarrow; a command's
    module loads when that command runs or shows its own help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _commands().get_command(ctx, cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


@functools.cache
def _commands() -> click.Group:
    from pipeline.commands import app as commands

    return typer.main.get_command(commands)


app = typer.Typer(
    cls=LazyCommands, add_completion=False, no_args_is_help=True, rich_markup_mode=None
)


@app.callback(help=__doc__)
def _main() -> None:
    pass


if __name__ == "__main__":
    app()
