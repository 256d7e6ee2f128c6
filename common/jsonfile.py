"""Reading a JSON object that a file of ours must hold (stats.json, net_meta.json): one place
that turns a damaged file into a UserError naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import UserError


def read_json_object(path: Path, where: str, fix: str) -> dict[str, Any]:
    """The JSON object in `path`; a UserError starting with `where` (the file, maybe the field
    that names it) with `fix` when it is not readable JSON or not an object. A missing file
    raises FileNotFoundError: what that means is the caller's to say."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{where} is not readable JSON ({e})", fix) from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must hold a JSON object", fix)
    return data
