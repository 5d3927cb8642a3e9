"""Typed, validated loading of YAML into frozen dataclasses.

Every config class is a frozen dataclass whose fields are declared with :func:`setting`, which
carries a one-line doc and optional numeric bounds. :func:`from_mapping` builds an instance from
plain data, refusing unknown keys ("did you mean ..."), wrong types and out-of-range values with a
:class:`ConfigError` that names the file, the dotted key and what was expected.

Example::

    @dataclasses.dataclass(frozen=True)
    class Camera:
        name: str = setting(doc="ROS name of the camera")
        fps: float = setting(30.0, doc="frame rate [Hz]", gt=0)

    cam = from_mapping(Camera, {"name": "front"}, source="robot.yaml")
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config value was refused. ``str()`` is one line: ``<file>: <key>: <what was expected>``."""

    def __init__(self, source: str, key: str, message: str):
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class FieldError(ValueError):
    """Raised inside ``__post_init__`` for a cross-field rule; becomes a ConfigError with context."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def setting(
    default: Any = _MISSING,
    *,
    doc: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare a config field with a description and optional numeric bounds."""
    metadata = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a default_factory-free immutable default")
    return dataclasses.field(default=default, metadata=metadata)


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_bounds(value: float, meta: Mapping[str, Any], source: str, key: str) -> None:
    rules = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
             ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))
    for name, symbol, ok in rules:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(source, key, f"expected a value {symbol} {bound}, got {value!r}")


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, source, key)
            except ConfigError as error:
                errors.append(error.message)
        raise ConfigError(source, key, " or ".join(errors))
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {_describe(value)}")
        return tuple(_convert(item_type, v, source, _join(key, i)) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, source=source, prefix=key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = [m.value for m in tp]
            hint = did_you_mean(str(value), [str(c) for c in choices])
            raise ConfigError(
                source, key, f"expected one of {choices}, got {_describe(value)}{hint}"
            ) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected a boolean, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(source, key, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {key}")


def did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def from_mapping(cls: type, data: Any, *, source: str, prefix: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``data``; raise ConfigError on anything wrong."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, prefix, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            hint = did_you_mean(str(key), list(fields))
            allowed = "" if hint else f" (allowed: {', '.join(fields)})"
            raise ConfigError(source, _join(prefix, str(key)), f"unknown key{hint}{allowed}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in data:
            if f.default is _MISSING and f.default_factory is _MISSING:
                doc = f.metadata.get("doc", "")
                raise ConfigError(source, key, f"missing required key ({doc})")
            continue
        value = _convert(hints[name], data[name], source, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_bounds(value, f.metadata, source, key)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except FieldError as error:
        raise ConfigError(source, _join(prefix, error.key), error.message) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely; errors name the file and line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as error:
        raise ConfigError(source, "", f"cannot read: {error.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(source, line, f"invalid YAML: {problem}") from None


def load(cls: type, path: str | Path) -> Any:
    """Read ``path`` and build ``cls`` from it."""
    path = Path(path)
    return from_mapping(cls, read_yaml(path), source=str(path))


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, type, doc) for every field, recursing into nested configs: for docs and --help."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        tp = hints[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if dataclasses.is_dataclass(inner):
            rows.append((key, "list" if inner is not tp else "mapping", f.metadata.get("doc", "")))
            rows.extend(describe_fields(inner, key + ("[]" if inner is not tp else "")))
        else:
            rows.append((key, _type_name(tp), f.metadata.get("doc", "")))
    return rows
