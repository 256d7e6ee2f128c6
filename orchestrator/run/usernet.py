"""A user's own net (`net: prototxt:`) in a run: copy it into the run directory and work out
what the controller needs that a generated net would have recorded in its meta: the classes,
the ignore label and how many images one validation pass must cover.

A generated net's val set is counted from the data stage's stats.json; a user's val net may
read anything, so the count comes from what its TEST-phase data layer reads (an LMDB, the
paired layer's LMDB, an ImageData list), then from data.val's stats.json. When neither is
possible the run still trains, and a `no-validation` finding says why and what to set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from common.datastats import STATS_FILE, read_stats
from common.findings import Finding
from orchestrator.config.experiment import Experiment
from orchestrator.contract import RunMeta
from orchestrator.rundir import RunDir

PAIRED = ("data_prep.layers", "PairedDataLayer")


def lmdb_entries(path: str | Path) -> int | None:
    """Number of records in an LMDB folder, or None when `path` is not one."""
    p = Path(path)
    if not (p / "data.mdb").is_file():
        return None
    import lmdb

    env = lmdb.open(str(p), readonly=True, lock=False, readahead=False)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


def _list_lines(path: str) -> int | None:
    p = Path(path)
    return sum(1 for line in p.read_text().splitlines() if line.strip()) if p.is_file() else None


def data_layer_count(layer: Any) -> tuple[int | None, str]:
    """(images the data layer reads per epoch or None, what it reads) for one layer."""
    if layer.type == "Data":
        src = layer.data_param.source
        return lmdb_entries(src), f"Data layer '{layer.name}' ({src})"
    if layer.type == "ImageData":
        src = layer.image_data_param.source
        return _list_lines(src), f"ImageData layer '{layer.name}' ({src})"
    if layer.type == "Python" and (layer.python_param.module, layer.python_param.layer) == PAIRED:
        try:
            images = json.loads(layer.python_param.param_str or "{}").get("images", "")
        except json.JSONDecodeError:
            images = ""
        return lmdb_entries(images) if images else None, f"paired layer '{layer.name}' ({images})"
    kind = f"{layer.python_param.module}.{layer.python_param.layer}" if layer.type == "Python" else layer.type
    return None, f"{kind} layer '{layer.name}'"


def val_net_count(val_param: Any) -> tuple[int | None, str]:
    """Images one pass over the val net's data covers: the smallest count among its TEST-phase
    data layers (image and label LMDBs hold the same keys), and what they read."""
    from nets.graph import DATA_TYPES, in_phase

    sources = [
        data_layer_count(layer)
        for layer in in_phase(val_param, "TEST")
        if layer.type in DATA_TYPES and not layer.bottom
    ]
    if not sources:
        return None, "the val net has no data layer"
    counts = [n for n, _ in sources if n is not None]
    if len(counts) == len(sources):
        return min(counts), ", ".join(what for _, what in sources)
    return None, "; ".join(what for n, what in sources if n is None)


def _loss_ignore_label(param: Any) -> int | None:
    """The ignore label the net's own loss or accuracy layer declares, if any."""
    for layer in param.layer:
        if layer.HasField("loss_param") and layer.loss_param.HasField("ignore_label"):
            return int(layer.loss_param.ignore_label)
        if layer.type == "Accuracy" and layer.accuracy_param.HasField("ignore_label"):
            return int(layer.accuracy_param.ignore_label)
    return None


def validation_plan(exp: Experiment, val_param: Any | None) -> tuple[int, list[Finding]]:
    """(images per validation pass, findings): the whole val set unless validation.max_images
    caps it; 0 with a `no-validation` warning when the run cannot validate."""
    cap = exp.validation.max_images
    if not exp.validation.enabled:
        return 0, []
    if val_param is None:
        if exp.data.val:
            return 0, [
                Finding(
                    "warning",
                    "no-validation",
                    None,
                    f"data.val ({exp.data.val}) is set, but a net of your own reads the data its prototxt "
                    "names, and no val net was given: the run trains without validation.",
                    "add net.val_prototxt: a copy of the train prototxt whose data layer reads the val "
                    "LMDBs (see README, Bring your own net)",
                )
            ]
        return 0, []  # the doctor's no-validation finding already says so
    n, what = val_net_count(val_param)
    source, recorded = what, read_stats(exp.data.val, key="data.val", required=False).get("num_records")
    if n is None and recorded:
        n, source = int(recorded), f"{exp.data.val}/{STATS_FILE}"
    if n is None and cap:
        return cap, [
            Finding(
                "info",
                "validation-size",
                None,
                f"validation covers validation.max_images = {cap} images (the val set's "
                f"size could not be read from {what})",
                "none needed",
            )
        ]
    if n is None:
        return 0, [
            Finding(
                "warning",
                "no-validation",
                None,
                f"the run trains without validation: cannot tell how many images the val net reads ({what}).",
                "set validation.max_images to the number of val images, or read the val set through "
                "the data stage's LMDBs (Data layers, or the paired layer) and give data.val",
            )
        ]
    if n == 0:
        return 0, [
            Finding(
                "warning",
                "no-validation",
                None,
                f"the val set is empty ({source})",
                "build the val LMDBs with orchestrate data build",
            )
        ]
    return min(n, cap or n), []


def user_net_meta(exp: Experiment, run: RunDir) -> tuple[RunMeta, list[Finding]]:
    """Copy the user's train (and val) prototxt into the run directory; return the meta the
    controller needs and findings for the run's list (how validation will go). A train_val
    file (TEST-phase data layers) serves as its own val net."""
    from nets.graph import has_test_data
    from nets.prototxt import load_net, read_meta

    assert exp.net.prototxt is not None  # only an experiment with net.prototxt comes here
    shutil.copyfile(exp.net.prototxt, run.train_net)
    train = load_net(run.train_net)
    val_src = exp.net.val_prototxt or (exp.net.prototxt if has_test_data(train) else None)
    val = None
    if val_src:
        shutil.copyfile(val_src, run.val_net)
        val = load_net(run.val_net)
    stats = read_stats(exp.data.val, key="data.val", required=False) or read_stats(
        exp.data.train, key="data.train", required=False
    )
    header = read_meta(run.train_net.read_text()) or {}  # a generated net's `# segorch-meta:`
    meta = RunMeta.from_dict(header)
    meta.num_classes = exp.net.num_classes or meta.num_classes or stats.get("num_classes")
    meta.ignore_label = next(
        (
            v
            for v in (
                exp.net.ignore_label,
                meta.ignore_label,
                stats.get("ignore_label"),
                _loss_ignore_label(val or train),
            )
            if v is not None
        ),
        None,
    )
    if "class_names" not in header:
        meta.class_names = exp.data.class_names or stats.get("class_names")
    meta.val_images, findings = validation_plan(exp, val)
    return meta, findings
