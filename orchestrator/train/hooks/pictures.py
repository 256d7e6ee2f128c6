"""At each new best validation: overlays and error maps of the first val images, and the
confusion matrix, in RUN_DIR/best/ (report.md shows them; TensorBoard gets the overlays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.findings import Finding
from orchestrator.contract import RunMeta
from orchestrator.train.loop import Context, Hook


class BestPicturesHook(Hook):
    """Renders at a new best validation; nothing for a run without a data-stage val dir."""

    name = "best_pictures"

    def __init__(self, val_dir: str, count: int, meta: RunMeta, mean_bgr: list[float] | None) -> None:
        """`count` pictures of the data-stage output `val_dir`, named and coloured by the run's
        net meta (classes, ignore label, class names)."""
        self.val_dir, self.count, self.meta, self.mean_bgr = Path(val_dir), count, meta, mean_bgr
        self.pictures: Any = None

    def before_train(self, ctx: Context) -> None:
        from orchestrator.predict.pictures import BestPictures

        m = self.meta
        if m.num_classes:  # the worker adds this hook only for a net whose classes it knows
            self.pictures = BestPictures(
                ctx.run.root, self.val_dir, self.count, m.num_classes, m.ignore_label, m.class_names, self.mean_bgr
            )

    def after_validation(self, ctx: Context) -> None:
        if not (ctx.new_best and self.pictures is not None) or self.pictures.failed:
            return
        try:
            ctx.pictures = self.pictures.render(ctx.solver.net, ctx.iteration, ctx.confusion)
        except Exception as e:  # a picture is never worth the run
            self.pictures.failed = str(e)
        if self.pictures.failed:
            ctx.findings.append(
                Finding(
                    "warning",
                    "pictures-failed",
                    None,
                    f"no best-validation pictures: {self.pictures.failed}",
                    "training and validation go on; orchestrate predict RUN_DIR draws the pictures "
                    "once the net's deploy form is fixed",
                )
            )
