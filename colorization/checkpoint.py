"""Model checkpoints: weights as safetensors, everything else as JSON; untrusted input.

A checkpoint directory holds
- ``model.safetensors``: the weights, with the model name, its constructor arguments and the
  colour-table fingerprint in the safetensors metadata;
- ``classes.parquet``: the colour-class table the model predicts (class models only);
- ``training_state.pt`` (optional): optimizer/scheduler state, read with ``weights_only=True``;
- ``meta.json``: step, epoch, the run's configuration and last metrics.

A model to ship is the inference version of a checkpoint (:func:`save_inference_checkpoint`):
no training state and no category head, which only training uses.

Loading never executes code from the file and never loads non-strictly: a mismatch in model
name, table fingerprint, parameter names or shapes raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from colorization.models import create_model
from colorization.tables import ColorTable, TableFormatError

FORMAT = "colorization.checkpoint/1"
WEIGHTS = "model.safetensors"
TABLE = "classes.parquet"
STATE = "training_state.pt"
META = "meta.json"
#: the parameters of the category head, which only training uses (see save_inference_checkpoint)
CATEGORY_HEAD = "category_head."
#: the parameters that map decoder features to colour classes (they depend on the table)
COLOUR_HEAD = "head."


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says what does not match."""


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    table: ColorTable | None,
    training_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory (files written whole, then renamed)."""
    _check_table_fits(model, table, str(directory))
    header = {
        "format": FORMAT,
        "model": model.variant,
        "model_config": json.dumps(model.config),
        "tables_fingerprint": table.fingerprint if table is not None else "",
    }
    return _write(directory, model.state_dict(), header, table, training_state, meta)


def save_inference_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write the inference version of checkpoint ``src`` to ``dst``: weights, table and meta,
    no training state, and no category head.

    The category head is training-only (``prepare_for_inference`` never runs it and nothing
    else reads it): its tensors are left out and the model config says ``num_categories=0``,
    so :func:`load_model` rebuilds the model without one and loads strictly. Everything else,
    ``pretrained`` included, is kept as trained. The colour output is unchanged.
    """
    if Path(dst).resolve() == Path(src).resolve():
        raise ValueError(f"{dst}: the inference version would overwrite its own checkpoint")
    model, table = load_model(src)  # the source checked whole
    header = read_header(src)
    config = json.loads(header["model_config"])
    state = model.state_dict()
    if config.get("num_categories", 0) > 0:
        config["num_categories"] = 0
        state = {k: v for k, v in state.items() if not k.startswith(CATEGORY_HEAD)}
        slim = _rebuild(header["model"], config, str(src))
        load_state_strict(slim, state, f"{src} without its category head")
    header = {**header, "model_config": json.dumps(config)}
    return _write(dst, state, header, table, None, read_meta(src))


def _write(
    directory: str | Path,
    state: dict[str, torch.Tensor],
    header: dict[str, str],
    table: ColorTable | None,
    training_state: dict[str, Any] | None,
    meta: dict[str, Any] | None,
) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(state, d / (WEIGHTS + ".tmp"), metadata=header)
    os.replace(d / (WEIGHTS + ".tmp"), d / WEIGHTS)
    if table is not None:
        table.save(d / TABLE)
    if training_state is not None:
        torch.save(training_state, d / (STATE + ".tmp"))
        os.replace(d / (STATE + ".tmp"), d / STATE)
    (d / META).write_text(json.dumps(dict(meta or {}, **header), indent=2, default=str))
    return d


def read_header(directory: str | Path) -> dict[str, str]:
    """The safetensors metadata of a checkpoint (model name, config, table fingerprint)."""
    path = Path(directory) / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{directory}: no {WEIGHTS} (not a checkpoint directory)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({e})") from e
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("model", "model_config") if k not in header]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {missing}")
    return header


def load_model(
    directory: str | Path,
    expect_model: str | None = None,
    expect_table: ColorTable | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, ColorTable | None]:
    """Rebuild the model of a checkpoint and load its weights strictly; returns the model (in
    eval mode) and its colour table (None for regression models)."""
    d = Path(directory)
    header = read_header(d)
    name = header["model"]
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{d}: holds model {name!r}, expected {expect_model!r}")
    try:
        config = json.loads(header["model_config"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d}: cannot rebuild model {name!r}: {e}") from e
    model = _rebuild(name, config, str(d))
    table = None
    if header.get("tables_fingerprint"):
        try:
            table = ColorTable.load(d / TABLE)
        except (FileNotFoundError, TableFormatError) as e:
            raise CheckpointError(f"{d}: its colour table is missing or invalid: {e}") from e
        if table.fingerprint != header["tables_fingerprint"]:
            raise CheckpointError(
                f"{d}: {TABLE} has fingerprint {table.fingerprint[:12]}, the weights were "
                f"trained with {header['tables_fingerprint'][:12]}"
            )
    if expect_table is not None and header.get("tables_fingerprint") != expect_table.fingerprint:
        raise CheckpointError(
            f"{d}: trained with colour table {header.get('tables_fingerprint', '')[:12]}, "
            f"expected {expect_table.fingerprint[:12]}"
        )
    _check_table_fits(model, table, str(d))
    try:
        state = load_file(d / WEIGHTS, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{d / WEIGHTS}: corrupt weights ({e})") from e
    load_state_strict(model, state, str(d))
    return model.eval(), table


def _rebuild(name: str, config: dict[str, Any], where: str) -> nn.Module:
    """``create_model(name, **config)`` for weights that come from a checkpoint: a pretrained
    encoder's package weights are not loaded (they would be overwritten), and ``model.config``
    stays the checkpoint's (``pretrained`` says how the trained encoder started)."""
    try:
        built = {**config, "pretrained": False} if "pretrained" in config else config
        model = create_model(name, **built)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot rebuild model {name!r}: {e}") from e
    model.config = dict(config)
    return model


def _check_table_fits(model: nn.Module, table: ColorTable | None, where: str) -> None:
    """A class model needs a table with as many classes as it predicts; others need none."""
    if model.output_kind != "classes":
        return
    if table is None:
        raise CheckpointError(
            f"{where}: model {model.variant!r} predicts colour classes but has no table"
        )
    if table.num_classes != model.config.get("num_classes", table.num_classes):
        raise CheckpointError(
            f"{where}: model predicts {model.config['num_classes']} classes, "
            f"its table has {table.num_classes}"
        )


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with a message listing every mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{where}: weights do not fit the model: " + ", ".join(parts))
    model.load_state_dict(state, strict=True)


def load_matching(
    model: nn.Module, directory: str | Path, table: ColorTable | None = None
) -> tuple[list[str], list[str]]:
    """Start ``model`` from another checkpoint's weights (fine-tuning, or a variant of the
    same network): every tensor whose name and shape match is copied, the rest keeps its
    initialisation. The colour head is skipped when the checkpoint's table is not ``table``
    (its classes would mean other colours). Returns (copied names, skipped names)."""
    d = Path(directory)
    header = read_header(d)
    try:
        state = load_file(d / WEIGHTS)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{d / WEIGHTS}: corrupt weights ({e})") from e
    same_table = table is None or header.get("tables_fingerprint") == table.fingerprint
    own = model.state_dict()
    copied, skipped = [], []
    for name, tensor in own.items():
        theirs = state.get(name)
        fits = theirs is not None and theirs.shape == tensor.shape
        if fits and (same_table or not name.startswith(COLOUR_HEAD)):
            own[name] = theirs
            copied.append(name)
        else:
            skipped.append(name)
    if not copied:
        raise CheckpointError(f"{d}: no weight fits the model (is it the same network?)")
    model.load_state_dict(own, strict=True)
    return copied, skipped


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"{path}: unreadable training state ({e})") from e


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META
    return json.loads(path.read_text()) if path.exists() else {}


def checkpoints_newest_first(run_dir: str | Path) -> list[Path]:
    """The checkpoints directly under a run directory, highest step first."""
    found = [
        (read_meta(m.parent).get("step", -1), m.parent) for m in Path(run_dir).glob("*/meta.json")
    ]
    return [d for _, d in sorted(found, key=lambda x: -x[0])]


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy the inference files of a checkpoint (weights, table, meta) to ``dst``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, TABLE, META):
        if (Path(src) / name).exists():
            shutil.copyfile(Path(src) / name, dst / name)
    return dst
