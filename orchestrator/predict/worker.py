"""The child of `orchestrate predict`: `python -m orchestrator.predict.worker JOB.json`.

Builds the run's deploy net with the chosen snapshot (orchestrator.predict.forward, shared with
the best-validation pictures), preprocesses each image as the data
stage and the val net did (resize, mean, scale, BGR), runs the net at the image's size (or on
tiles for a net with a fixed input size), brings the classes back to the original size with
nearest-neighbour, and writes per image a paletted class PNG, an overlay and (with a label)
an error map; with `eval`, eval.json and confusion.png (the validation's definitions).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.child import flush_and_exit
from common.errors import UserError
from orchestrator import metrics
from orchestrator.contract import (
    CONFUSION,
    EVAL_FILE,
    EXIT_BAD_INPUT,
    EXIT_OK,
    RUN_FILES,
    EnsembleModel,
    PredictJob,
    class_labels,
)
from orchestrator.predict import forward, overlay
from orchestrator.predict.panel import panel
from orchestrator.predict.tta import parse as parse_tta


class Predictor(forward.DeployNet):
    """The snapshot's deploy net on the job's device, built once for all images."""

    def __init__(self, job: PredictJob | EnsembleModel, folder: Path, device: str = "cpu") -> None:
        import caffe

        if device == "cpu":
            caffe.set_mode_cpu()
        else:
            caffe.set_device(int(device.split(":")[1]))
            caffe.set_mode_gpu()
        size = job.input_size or (64, 64)
        mean = list(job.mean_bgr) if job.mean_bgr else None
        super().__init__(Path(job.run), folder, size, mean, weights=job.weights, resize=job.resize)


def _members(job: PredictJob, folder: Path) -> list[Predictor]:
    """The deploy nets of --ensemble's snapshots; a net derived from a member's val net goes to a
    folder of its own under `folder` (not into the published predictions)."""
    nets = []
    for i, m in enumerate(job.ensemble):
        sub = folder / f".ensemble-{i}"
        sub.mkdir(exist_ok=True)
        nets.append(Predictor(m, sub, job.device))
        (sub / RUN_FILES["deploy_net"]).unlink(missing_ok=True)
        sub.rmdir()
    return nets


def _names(pairs: Sequence[Sequence[Any]]) -> list[str]:
    """Output names: the image's stem, made unique."""
    seen: dict[str, int] = {}
    out = []
    for image, _, _ in pairs:
        stem = Path(image).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def _read(pair: Sequence[Any], lut: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The image (BGR) and its label ids, as the data stage reads them (labels through `lut`,
    the data stage's palette lookup for colour-coded labels)."""
    from data_prep.decode import _Problem, read_image, read_label

    image, label, where = pair
    try:
        img = read_image(Path(image))
        lab = None
        if label:
            lab, _ = read_label(Path(label), lut, allow_lossy=True)
            if lab.shape != img.shape[:2]:
                raise UserError(
                    f"{where}: label {label} is {lab.shape[1]}x{lab.shape[0]}, image {img.shape[1]}x{img.shape[0]}",
                    "give each image its own label",
                )
    except _Problem as p:
        raise UserError(f"{where}: {p.file}: {p.reason}", p.fix or "check the file") from None
    return img, lab


def speed_line(images: int, seconds: float, net_seconds: float) -> str:
    """What `predict` says about its speed: all the work, and the net's forward passes alone."""
    line = f"{images} image(s) in {seconds:.1f} s: {images / max(seconds, 1e-9):.1f} images/s"
    return line + (f" (the net alone: {images / net_seconds:.1f} images/s)" if net_seconds > 0 else "")


def run(job: PredictJob, folder: Path) -> None:
    """Predict every image of the job into `folder`."""
    from data_prep.progress import Progress
    from data_prep.sources import palette_lut, read_palette

    pred = Predictor(job, folder, job.device)
    members = [pred, *_members(job, folder)] if job.ensemble else []
    for m in members:
        if m.info.label_offset is not None:
            raise UserError(
                f"--ensemble: {m.prototxt} scores only the centre its label crop keeps (offset "
                f"{m.info.label_offset}); an ensemble averages class probabilities at every input pixel",
                "predict with that run alone (no --ensemble)",
            )
    nc = int(job.num_classes or pred.net.blobs[pred.info.score_blob].channels)
    ignore = job.ignore_label
    colours = read_palette(Path(job.palette), nc, ignore if ignore is not None else 255) if job.palette else None
    pal = overlay.palette_from_file(colours) if colours else overlay.default_palette()
    lut = palette_lut(colours) if colours else None
    names = class_labels(list(job.class_names or []), nc)
    conf = np.zeros((nc, nc), np.int64)
    pairs, stems = job.pairs, _names(job.pairs)
    tta = parse_tta(job.tta) if job.tta else None
    bar = Progress(len(pairs), "predict", unit="images", quiet=job.quiet, stream=sys.stdout)
    net_seconds = 0.0
    for start in range(0, len(pairs), job.batch):
        chunk = [_read(p, lut) for p in pairs[start : start + job.batch]]
        t0 = time.perf_counter()
        images = [c[0] for c in chunk]
        batch = forward.ensemble_classes(members, images, tta) if members else pred.classes(images, tta)
        net_seconds += time.perf_counter() - t0
        for (img, lab), cls, stem in zip(chunk, batch, stems[start:], strict=False):
            overlay.write_index_png(folder / f"{stem}.png", cls, pal)
            overlay.write_rgb_png(folder / f"{stem}_overlay.png", overlay.overlay(img, cls, pal))
            overlay.write_rgb_png(folder / f"{stem}_panel.png", panel(img, cls, lab, pal, names, ignore, stem))
            if lab is not None:
                overlay.write_rgb_png(folder / f"{stem}_error.png", overlay.error_map(img, cls, lab, ignore))
                scored = cls != forward.NO_CLASS if pred.info.label_offset is not None else slice(None)
                conf += metrics.confusion(cls[scored], lab[scored], nc, ignore)
            bar.update()
    tta_note = f" with test-time augmentation {tta.label()} ({tta.views} passes per image)" if tta else ""
    tta_note += f", an ensemble of {len(members)} snapshots" if members else ""
    print(speed_line(len(pairs), bar.elapsed(), net_seconds) + tta_note, flush=True)
    if job.eval:
        result = {
            **metrics.scores(conf),
            "images": len(pairs),
            "iteration": job.iteration,
            "snapshot": job.snapshot,
            "tta": tta.label() if tta else None,
            "ensemble": [f"{m.run}/{m.snapshot}" for m in job.ensemble],
            "class_names": names,
            "confusion": conf.tolist(),
        }
        (folder / EVAL_FILE).write_text(json.dumps(result, indent=1))
        overlay.plot_confusion(
            conf,
            names,
            folder / CONFUSION,
            f"{Path(job.run).name} {job.snapshot}: mIoU {result['mean_iu']:.3f}",
        )


def main(argv: list[str] | None = None) -> int:
    """Run the job file's prediction; exit without Caffe's teardown."""
    args = sys.argv[1:] if argv is None else argv
    job_file = Path(args[0])
    code = EXIT_OK
    try:
        run(PredictJob.from_json(job_file.read_text()), job_file.parent)
    except UserError as e:
        print(f"error: {e.message}" + (f" (fix: {e.fix})" if e.fix else ""), file=sys.stderr)
        code = EXIT_BAD_INPUT
    flush_and_exit(code)


if __name__ == "__main__":
    main()
