"""Which infogain H a generated net's InfogainLoss reads (`net.class_weighting`).

The data stage writes the median-frequency H next to the LMDBs. Median frequency gives CamVid's
rarest class 100 times the weight of Road, which can trade the common classes' accuracy for the
rare ones'; the square root of those weights is a softer choice between them and no weights.
A weighting other than the data stage's own is written into the run directory, from the
stats.json weights, with the data stage's own writer (one H format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from data_prep.datum import blobproto_bytes
from data_prep.stats import infogain_matrix

WEIGHTINGS = ("median_frequency", "sqrt_median_frequency")


def weights_for(weighting: str, stats: dict[str, Any]) -> np.ndarray:
    """Class weights of `weighting` from the data stage's stats.json (UserError when absent)."""
    try:
        mf = np.asarray(stats["class_weights"]["median_frequency"], np.float64)
    except (KeyError, TypeError):
        raise UserError(
            "data.train: stats.json has no class_weights.median_frequency",
            "rebuild the training data with orchestrate data build",
        ) from None
    if weighting == "median_frequency":
        return mf
    if weighting == "sqrt_median_frequency":
        return np.sqrt(mf)
    raise UserError(f"net.class_weighting: unknown weighting {weighting!r}", f"use one of {WEIGHTINGS}")


def infogain_file(weighting: str, data_stage_h: str | Path, stats: dict[str, Any], run_root: str | Path) -> str:
    """The H file for `weighting`: `data_stage_h` (the data stage's own) for median frequency,
    otherwise `infogain_H_<weighting>.binaryproto` written into the run directory."""
    if weighting == "median_frequency":
        return str(data_stage_h)
    out = Path(run_root) / f"infogain_H_{weighting}.binaryproto"
    out.write_bytes(blobproto_bytes(infogain_matrix(weights_for(weighting, stats))))
    return str(out)
