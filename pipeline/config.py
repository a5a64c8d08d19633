"""Typed configs from YAML (``safe_load``) with ``key=value`` overrides, saved with each run."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        items = value if isinstance(value, list) else [value]
        return [_coerce(arg, v, where) for v in items]
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{where}: not a boolean: {value!r}")
        return str(value).lower() in ("true", "1", "yes")
    if tp is int and (
        isinstance(value, bool) or (isinstance(value, float) and value != int(value))
    ):
        raise ValueError(f"{where}: expected int, got {value!r}")
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}") from e
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error, not ignored."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> nested updates; values parsed as YAML scalars."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if node.get(p) is not None and not isinstance(node[p], dict):
                raise ValueError(f"override {item!r}: {p!r} is not a mapping")
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    return from_dict(cls, apply_overrides(data or {}, list(overrides)), str(path or cls.__name__))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
