"""At each new best validation: overlays and error maps of the first val images, and the
confusion matrix, in RUN_DIR/best/ (report.md shows them; TensorBoard gets the overlays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.train.loop import Context, Hook


class BestPicturesHook(Hook):
    """Runs after the validation hook; renders nothing for a run without a data-stage val dir."""

    name = "best_pictures"

    def __init__(
        self,
        val_dir: str,
        count: int,
        num_classes: int,
        ignore_label: int | None,
        class_names: list[str] | None,
        mean_bgr: list[float] | None,
    ) -> None:
        self.args = (Path(val_dir), count, num_classes, ignore_label, class_names, mean_bgr)
        self.pictures: Any = None

    def before_train(self, ctx: Context) -> None:
        from orchestrator.predict.pictures import BestPictures

        val_dir, count, *rest = self.args
        self.pictures = BestPictures(ctx.run.root, val_dir, count, *rest)

    def _render(self, ctx: Context) -> None:
        if ctx.new_best and self.pictures is not None:
            ctx.pictures = self.pictures.render(ctx.solver.net, ctx.iteration, ctx.confusion)

    def after_step(self, ctx: Context) -> None:
        self._render(ctx)

    def after_train(self, ctx: Context) -> None:
        self._render(ctx)
