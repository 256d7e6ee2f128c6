"""The one reader of the stats.json that the data stage (data_prep.build) writes into each of
its output dirs (sizes, mean, classes, palette, class counts): the run, predict, the worker,
the paired data layer and the doctor all read it here, so a damaged file is the same clear
error everywhere. In common/ because nets/ and data_prep/ may import only common/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import UserError
from common.jsonfile import read_json_object

STATS_FILE = "stats.json"


def read_stats(data_dir: str | Path | None, *, key: str = "data", required: bool = True) -> dict[str, Any]:
    """The stats.json of a data-stage output dir `data_dir` (or the file itself). A missing file
    is a UserError naming `key` (the config field or option) when `required`, else {}; a file
    that is not a JSON object is always a UserError naming it."""
    if data_dir is None:
        return {}
    p = Path(data_dir)
    p = p if p.is_file() else p / STATS_FILE
    if not p.is_file():
        if not required:
            return {}
        raise UserError(
            f"{key}: {data_dir} has no {STATS_FILE} (not built by `orchestrate data build`)",
            "build it with orchestrate data build, or add data.build to the experiment",
        )
    return read_json_object(p, f"{key}: {p}", "rebuild the data with orchestrate data build")
