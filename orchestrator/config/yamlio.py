"""Reading the user's YAML (experiments, sweeps, --set values) within bounds.

YAML can be made to explode: a few hundred bytes of nested aliases (`&a [*a, *a, ...]`) load as a
small shared graph, but anything that walks it (the schema, an error message quoting it, a deep
copy for a trial) expands it to billions of nodes; a 50 MB file takes minutes to parse. So a file
is read only up to MAX_BYTES, the loaded tree is measured with its aliases expanded (and refused
past MAX_NODES or when an alias refers to itself), and values quoted in messages are cut short.
"""

from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError

MAX_BYTES = 1 << 20  # an experiment or sweep file is a page of keys; 1 MiB is generous
MAX_NODES = 100_000  # values in the tree with aliases expanded; the largest real config has a few hundred
MAX_MESSAGE = 2000  # characters of a parser's message quoted in an error

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 6
_SHORT.maxlevel = 3


def shown(value: Any) -> str:
    """repr() of a value cut to at most a few hundred characters, for error messages."""
    return _SHORT.repr(value)


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def expanded_size(value: Any, limit: int = MAX_NODES) -> int:
    """Number of values in `value` with every alias expanded, counting stops just past `limit`;
    ValueError when a value contains itself (a recursive alias). Linear in distinct values."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (dict, list)):
            return 1
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("an alias refers to a value that contains it")
        active.add(key)
        total = 1
        for child in v.values() if isinstance(v, dict) else v:
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(value)


def check_bounded(value: Any, where: str) -> None:
    """UserError when `value` expands (through YAML aliases) past MAX_NODES or into a cycle."""
    try:
        n = expanded_size(value)
    except RecursionError:
        n = MAX_NODES + 1
    except ValueError as e:
        raise UserError(f"{where}: {e}", "write the value out instead of using an anchor inside itself") from None
    if n > MAX_NODES:
        raise UserError(
            f"{where}: more than {MAX_NODES} values once its aliases (*name) are expanded",
            "write the configuration out plainly: an experiment needs a few hundred values at most",
        )


def read_text(path: Path, what: str, fix: str) -> str:
    """The file's UTF-8 text, refusing a missing, non-regular, oversized or non-UTF-8 file by name."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""), fix)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(
            f"{path}: cannot read the {what}: {e.strerror or e}", "check the path and its permissions"
        ) from e
    if len(data) > MAX_BYTES:
        raise UserError(
            f"{path}: the {what} is larger than {MAX_BYTES // 1024} KiB",
            f"give the {what} itself (a page of YAML keys), not a data or log file",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
            f"save the {what} as UTF-8 YAML",
        ) from e


def load_text(
    text: str, where: str, fix: str = "fix the YAML syntax at the line shown", bad: str = "not valid YAML"
) -> Any:
    """yaml.safe_load within bounds; UserError '`where`: `bad`: why' on bad YAML or an explosive tree."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: {bad}: {cut(str(e))}", fix) from None
    except RecursionError:  # thousands of nested brackets
        raise UserError(f"{where}: {bad}: nested too deeply", "flatten the nesting") from None
    check_bounded(raw, where)
    return raw


def load_file(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """A YAML file read and parsed within bounds (see read_text and load_text)."""
    p = Path(path)
    return load_text(read_text(p, what, fix), str(p))


def load_mapping(path: str | os.PathLike[str], what: str, fix: str) -> dict[str, Any]:
    """load_file, refusing a document that is not a mapping (empty, a list, a scalar)."""
    raw = load_file(path, what, fix)
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}, not a mapping of keys"
        raise UserError(f"{path}: the {what} is {kind}", fix)
    return raw


MAX_LISTED = 30  # problems listed in one error; the rest are counted


def problem_list(errors: list[str], limit: int = MAX_LISTED) -> str:
    """'\n  - a\n  - b' for the first `limit` problems, then how many more there are."""
    more = f"\n  - ... and {len(errors) - limit} more" if len(errors) > limit else ""
    return "".join(f"\n  - {cut(e, 500)}" for e in errors[:limit]) + more
