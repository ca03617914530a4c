"""Typed parameter schemas: declare a parameter once (`param`), validate configs against it, render it.

A stage's `Params` dataclass is the single source of its parameters: the default and the one-line help
written in `param(...)`. From it come the config validation (unknown keys, wrong types, ranges), the
notebook's parameters cell (`parameters_cell`, kept equal by a test) and the typed object the stage's code
receives (`from_namespace`). Standard library only.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any, Union

LINE = 120  # the project's line length (ruff)


class ConfigError(ValueError):
    """A config or an override that no stage can run with; the message names the key and what is valid."""


def param(default: Any, help: str) -> Any:
    """A schema field: its default (copied per instance when mutable) and the help its notebook line shows."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def in_unit(name: str, value: float | None) -> None:
    """Refuse a share or level outside [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


def at_least(name: str, value: int, least: int = 1) -> None:
    """Refuse a count below `least`."""
    if value < least:
        raise ConfigError(f"{name} must be at least {least}, got {value}")


def one_of(name: str, value: Any, options: Iterable[Any]) -> None:
    """Refuse a value outside a closed list, naming the list."""
    options = list(options)
    if value not in options:  # options as a config writes them: true, false, null, bare words
        words = [{True: "true", False: "false", None: "null"}.get(o, o) if not isinstance(o, (int, float)) or
                 isinstance(o, bool) else o for o in options]
        raise ConfigError(f"{name} must be one of {', '.join(map(str, words))}; got {value!r}")


def defaults(schema: type) -> dict[str, Any]:
    """Every parameter of a schema with its default, as plain values (what the notebook's cell holds)."""
    return _plain(schema())


def from_namespace(schema: type, namespace: Mapping[str, Any]) -> Any:
    """The typed parameters from a namespace holding them by name (a notebook's globals after papermill)."""
    missing = [f.name for f in dataclasses.fields(schema) if f.name not in namespace]
    if missing:
        raise ConfigError(f"{schema.__module__}.{schema.__name__}: no value for {missing}")
    values = {f.name: namespace[f.name] for f in dataclasses.fields(schema)}
    validate(schema, values, schema.__module__.rsplit(".", 1)[-1])
    return schema(**values)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> None:
    """Raise ConfigError unless `value` fits the annotation `tp` (nested dataclasses checked key by key)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: {value!r} fits none of {[_type_name(o) for o in options]}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}, "
                              f"got {value!r}")
        validate(tp, value, where)
        return
    if tp is Any:
        return
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ConfigError(f"{where}: expected a {origin.__name__}, got {value!r}")
        args = typing.get_args(tp)
        items = value.items() if origin is dict else enumerate(value)
        for key, item in items:
            if args:
                _check(item, args[-1], f"{where}.{key}" if origin is dict else f"{where}[{key}]")
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def validate(schema: type, values: Mapping[str, Any], where: str) -> None:
    """Check `values` against a schema dataclass: known keys, types, then its own range checks."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        _check(value, hints[key], f"{where}.{key}")
    try:
        schema(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:  # a code config's own checks (TrainConfig's schedule, fold)
        raise ConfigError(f"{where}: {e}") from None


def _literal(value: Any) -> str:
    """A Python literal for a JSON-like value, strings in double quotes as in the notebooks."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def _annotation(tp: Any) -> str:
    """The annotation a notebook can evaluate: builtins only (a nested schema or code config is a dict)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_annotation(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if dataclasses.is_dataclass(tp):
        return "dict"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_annotation(a) for a in typing.get_args(tp))}]"
    return "object" if tp is Any else tp.__name__


def parameters_cell(schema: type) -> str:
    """The notebook's parameters cell: one line per parameter with its type, default and help.

    The type is an annotation papermill reads (`k: int = 50  # help`); a union, which papermill's pattern
    does not read, goes in a type comment (`fp_weight = 1.0  # type: float|str help`).
    """
    hints = typing.get_type_hints(schema)
    values = defaults(schema)
    lines, long = [], []
    for f in dataclasses.fields(schema):
        if "help" not in f.metadata:
            raise ConfigError(f"{schema.__name__}.{f.name} has no help: declare it with param(default, help)")
        kind = _annotation(hints[f.name])
        value = _literal(values[f.name])
        if "|" in kind:
            line = f"{f.name} = {value}  # type: {kind.replace(' ', '')} {f.metadata['help']}"
        else:
            line = f"{f.name}: {kind} = {value}  # {f.metadata['help']}"
        lines.append(line)
        long += [f"{f.name} ({len(line)})"] if len(line) > LINE else []
    if long:
        raise ConfigError(f"{schema.__module__}.{schema.__name__}: notebook lines over {LINE} characters: "
                          f"{', '.join(long)}; shorten their help")
    return "\n".join(lines)
