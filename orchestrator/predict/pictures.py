"""Pictures of the best validation: the first few val images, predicted by the trained weights
at each new best, written to RUN_DIR/best/ (overlay, error map, the confusion matrix) for
report.md and TensorBoard. The images come from the data stage's val LMDBs; the net is the
run's deploy net sharing the training net's weights, fed as `predict` feeds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.contract import BEST_INFO, CONFUSION, RUN_FILES, class_labels
from orchestrator.predict import overlay
from orchestrator.predict.forward import DeployNet
from orchestrator.predict.panel import panel

BEST_DIR = RUN_FILES["best"]
PANEL_SUFFIX = "_panel.png"  # one picture per example: image | ground truth | prediction | errors


def val_samples(val_dir: Path, k: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first `k` (name, H x W x 3 BGR image, H x W label) of a data-stage output dir."""
    import lmdb

    from data_prep.datum import datum_to_array, parse_datum

    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    with (
        lmdb.open(str(val_dir / "images"), readonly=True, lock=False) as img_env,
        lmdb.open(str(val_dir / "labels"), readonly=True, lock=False) as lab_env,
        img_env.begin() as ti,
        lab_env.begin() as tl,
    ):
        for key, raw in ti.cursor():
            if len(out) >= k:
                break
            lab = tl.get(key)
            if lab is None:
                continue
            name = key.decode(errors="replace").split("_", 1)[-1].rsplit(".", 1)[0]
            img = datum_to_array(parse_datum(raw)).transpose(1, 2, 0)
            out.append((name, np.ascontiguousarray(img), datum_to_array(parse_datum(lab))[0]))
    return out


class BestPictures:
    """Renders the samples with the current weights; builds its deploy net on first use."""

    def __init__(
        self,
        run_dir: Path,
        val_dir: Path,
        k: int,
        num_classes: int,
        ignore_label: int | None,
        class_names: list[str] | None,
        mean_bgr: list[float] | None,
    ) -> None:
        self.root = run_dir / BEST_DIR
        self.samples = val_samples(val_dir, k) if (val_dir / "images").exists() else []
        self.num_classes, self.ignore = num_classes, ignore_label
        self.names = class_labels(class_names, num_classes)
        self.run_dir, self.mean = run_dir, mean_bgr
        self.net: DeployNet | None = None
        self.failed: str | None = None  # why no pictures can be made (then none are tried again)
        self.palette = overlay.default_palette()

    def _build(self, train_net: Any) -> DeployNet:
        self.root.mkdir(exist_ok=True)
        h, w = self.samples[0][1].shape[:2]
        # Caffe aborts the whole training process on a net that does not fit together: what
        # would make it abort is checked first (derive_deploy checks what it derives)
        net = DeployNet(self.run_dir, self.root, (h, w), self.mean, check=True)
        net.net.share_with(train_net)
        return net

    def render(self, train_net: Any, iteration: int, confusion: list[list[int]] | None) -> list[tuple[str, np.ndarray]]:
        """Write the pictures of this (best) iteration; returns (tag, RGB) for TensorBoard."""
        if not self.samples or self.failed:
            return []
        if self.net is None:
            try:
                self.net = self._build(train_net)
            except Exception as e:  # no pictures is never a reason to stop training
                self.failed = str(getattr(e, "message", None) or e)
                return []
        out = []
        for name, img, label in self.samples:
            [cls] = self.net.classes([img])
            pic = panel(img, cls, label, self.palette, self.names, self.ignore, f"{name}, iteration {iteration}")
            overlay.write_rgb_png(self.root / f"{name}{PANEL_SUFFIX}", pic)
            out.append((name, pic))
        if confusion is not None:
            overlay.plot_confusion(
                np.asarray(confusion),
                self.names,
                self.root / CONFUSION,
                f"best validation, iteration {iteration}",
            )
        (self.root / BEST_INFO).write_text(json.dumps({"iteration": iteration, "images": [s[0] for s in self.samples]}))
        return out
