"""A typed, validated tree of frozen dataclasses built from plain mappings (the parsed params.yaml).

Generic machinery behind `drivepipe.config`: type and range checks per field (ranges live in the field's
`metadata["bounds"]`), unknown keys refused, a YAML loader that refuses duplicate keys, and a stable hash. Every
error is a `ConfigError` naming the dotted key. The project's sections and what each key changes stay in
drivepipe/config.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from typing import Any, Literal

import yaml

__all__ = ["ConfigError", "UniqueKeyLoader", "build", "config_hash", "to_dict"]


class ConfigError(ValueError):
    """A params value is unknown, of the wrong type or out of range; the message names the dotted key."""


def _check_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in the config tree")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):  # .nan / .inf pass every range check, then poison the run
            raise ConfigError(f"{key}: {value!r} is not a finite number")
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")
    return value


def _check_range(value: Any, bounds: dict[str, float], key: str) -> None:
    ops = {"ge": (lambda a, b: a >= b, ">="), "gt": (lambda a, b: a > b, ">"),
           "le": (lambda a, b: a <= b, "<="), "lt": (lambda a, b: a < b, "<")}
    for name, bound in bounds.items():
        test, sym = ops[name]
        if not test(value, bound):
            raise ConfigError(f"{key}: {value!r} is out of range (must be {sym} {bound})")


def build(cls: type, raw: Any, prefix: str) -> Any:
    """`cls(**raw)` with every field type- and range-checked, nested dataclasses built recursively."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {sorted(fields)})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        checked = _check_type(value, hints[name], key)
        _check_range(checked, fields[name].metadata.get("bounds", {}), key)
        kwargs[name] = checked
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix}: {exc}") from exc


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{key}: duplicate key (line {key_node.start_mark.line + 1}); "
                                  "YAML would silently keep only the last value")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def to_dict(obj: Any) -> Any:
    """The config (or one section) as plain JSON-able data, in field order."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def config_hash(*sections: Any) -> str:
    """A stable sha256 over one or more config sections (sorted-key JSON)."""
    blob = json.dumps([to_dict(s) for s in sections], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
