"""A strict loader from plain dicts (YAML) into typed dataclasses.

Why not a library: the rules are few and ours (unknown keys are errors with their path and a
"did you mean", every error is collected before reporting, numbers written like 1e-4 are
accepted although YAML 1.1 reads them as strings), and the venv stays small.

Limits live with the field they limit: `Annotated[int, Limits(ge=1)]` or `Annotated[str, Check(...)]`.
Checks that relate several fields are methods marked `@rule("a", "b.c")`; each runs on its own and
only when its fields loaded cleanly, so a mistyped field never hides another field's problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import struct
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from orchestrator.config.yamlio import shown

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_MISSING = dataclasses.MISSING
INT_MAX = 2**31 - 1  # Caffe keeps iterations, sizes and seeds in 32-bit protobuf fields


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds of a number, declared with its field; `also` lists values allowed outside them (-1: off)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[float, ...] = ()
    hint: str = ""

    def problem(self, value: float) -> str | None:
        """None if `value` is within the limits, else 'must be ..., got ...'."""
        bounds = [
            (op, b) for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)) if b is not None
        ]
        if value in self.also or all(_COMPARE[op](value, b) for op, b in bounds):
            return None
        wanted = " and ".join(f"{op} {b:g}" for op, b in bounds) + "".join(f" or {v:g}" for v in self.also)
        return f"must be {wanted}, got {shown(value)}" + (f" ({self.hint})" if self.hint else "")


_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass(frozen=True)
class Float32:
    """A number Caffe keeps in a 32-bit float (the solver's): it must stay finite there, and a
    value that is not 0 must not become 0 (1e308 would be inf, 1e-50 would be 0)."""

    def problem(self, value: float) -> str | None:
        try:
            as32 = struct.unpack("f", struct.pack("f", value))[0]
        except OverflowError:
            as32 = math.inf
        if math.isfinite(as32) and (as32 != 0 or value == 0):
            return None
        return (
            f"must be between {-FLOAT32_MAX:.4g} and {FLOAT32_MAX:.4g} and not below 1.4e-45 in size "
            f"(Caffe's solver keeps it in a 32-bit float, where it would be {as32!r}), got {shown(value)}"
        )


# Limits shared by many fields (the experiment's and the divergence rules' thresholds)
Count = Annotated[int, Limits(ge=1)]  # iterations, intervals, sizes: 0 would divide by zero or mean nothing
NonNegInt = Annotated[int, Limits(ge=0)]
PosFloat = Annotated[float, Limits(gt=0)]
NonNegFloat = Annotated[float, Limits(ge=0)]


@dataclasses.dataclass(frozen=True)
class Check:
    """Any other limit of one field: `test(value)` true (an exception counts as false), else 'must be <expected>'."""

    test: Callable[[Any], Any]
    expected: str

    def problem(self, value: Any) -> str | None:
        try:
            if self.test(value):
                return None
        except (TypeError, ValueError):
            pass
        return f"must be {self.expected}, got {shown(value)}"


def rule(*fields: str) -> Callable[[F], F]:
    """Mark a method `(self) -> str | None` as a check across `fields` (dotted, relative to its
    dataclass). Its problem is reported at the first field; it is skipped while any of its fields
    already has an error, so it always sees well-typed values."""

    def mark(fn: F) -> F:
        fn.schema_fields = fields  # type: ignore[attr-defined]
        return fn

    return mark


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _type_name(get_args(tp)[0])
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
    if origin is Annotated:
        base, *limits = get_args(tp)
        before = len(errors)
        value = convert(base, value, path, errors)
        if len(errors) == before:
            errors.extend(f"{path}: {p}" for p in (lim.problem(value) for lim in limits) if p)
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own, precise message
            return convert(options[0], value, path, errors)
        for a in options:
            trial: list[str] = []
            out = convert(a, value, path, trial)
            if not trial:
                return out
        errors.append(f"{path}: expected {_type_name(tp)}, got {shown(value)}")
        return None
    if origin is Literal:
        if value not in get_args(tp):
            close = difflib.get_close_matches(shown(value), [str(a) for a in get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{path}: must be one of {_type_name(tp)}, got {shown(value)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {shown(value)}")
            return []
        (item,) = get_args(tp)
        return [convert(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return load(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {shown(value)}")
        elif abs(value) > INT_MAX:
            errors.append(f"{path}: must be <= {INT_MAX} (Caffe stores it in 32 bits), got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {shown(value)}")
            return value
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        except (TypeError, ValueError):
            errors.append(f"{path}: expected a number, got {shown(value)}")
            return value
        if not math.isfinite(number):
            errors.append(f"{path}: must be a finite number, got {number!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {shown(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def load(cls: type[T], data: Any, path: str, errors: list[str]) -> T:
    """Build dataclass `cls` from a mapping, collecting every error instead of stopping at one."""
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    first_error = len(errors)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or '<top>'}: expected a mapping, got {shown(data)}")
        data = {}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = key if isinstance(key, str) and len(key) <= 60 else shown(key)
        where = f"{path}.{name}" if path else str(name)
        if key not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
            errors.append(f"{where}: unknown key{hint}")
            continue
        kwargs[key] = convert(hints[key], value, where, errors)
    for name, f in fields.items():
        if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING:
            errors.append(f"{path + '.' if path else ''}{name}: required key is missing")
            kwargs[name] = None
    obj = cls(**kwargs)
    bad = [e.split(": ", 1)[0] for e in errors[first_error:]]
    for check in _rules(cls):
        at = [f"{path}.{f}" if path else f for f in check.schema_fields]
        if not any(_overlap(w, b) for w in at for b in bad):
            problem = check(obj)
            if problem:
                errors.append(f"{at[0]}: {problem}")
    return obj


def _rules(cls: type) -> list[Any]:
    """The @rule methods of `cls` and its bases, in the order they are defined."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        found.update((n, fn) for n, fn in vars(klass).items() if hasattr(fn, "schema_fields"))
    return list(found.values())


def _overlap(field: str, bad: str) -> bool:
    """Whether an error at path `bad` concerns `field`: the same path, a parent or a part of it."""
    return bad == field or field.startswith((bad + ".", bad + "[")) or bad.startswith((field + ".", field + "["))


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
