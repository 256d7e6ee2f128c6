"""A strict loader from plain dicts (YAML) into typed dataclasses.

Why not a library: the rules are few and ours (unknown keys are errors with their path and a
"did you mean", every error is collected before reporting, numbers written like 1e-4 are
accepted although YAML 1.1 reads them as strings), and the venv stays small.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Check `value` against annotation `tp`; append 'path: problem' to errors; return the value."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            trial: list[str] = []
            out = convert(a, value, path, trial)
            if not trial:
                return out
        errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    if origin is Literal:
        if value not in get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{path}: must be one of {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {value!r}")
            return []
        (item,) = get_args(tp)
        return [convert(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return load(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {value!r}")
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            errors.append(f"{path}: expected a number, got {value!r}")
            return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def load(cls: type[T], data: Any, path: str, errors: list[str]) -> T:
    """Build dataclass `cls` from a mapping, collecting every error instead of stopping at one."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or '<top>'}: expected a mapping, got {data!r}")
        data = {}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
            errors.append(f"{where}: unknown key{hint}")
            continue
        kwargs[key] = convert(hints[key], value, where, errors)
    for name, f in fields.items():
        if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            errors.append(f"{path + '.' if path else ''}{name}: required key is missing")
            kwargs[name] = None
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            problems = check()
        except (TypeError, AttributeError, ValueError):  # a field already reported as mistyped
            problems = []
        errors.extend(f"{path + '.' if path else ''}{msg}" for msg in problems)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (for writing the resolved config)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one `--set a.b.c=value` override to a nested dict (creating mappings as needed)."""
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            node[k] = nxt
        node = nxt
    node[keys[-1]] = value

