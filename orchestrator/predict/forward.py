"""One way from an image to its classes, shared by `predict` (orchestrator.predict.worker) and
the best validation's pictures (orchestrator.predict.pictures): the run's deploy net (its own
deploy.prototxt, or one derived from its val net by orchestrator.predict.deploy), the
preprocessing the data stage and the val net applied (resize, mean, scale, BGR), the forward
pass at the image's size (or on tiles for a net with a fixed input size), and the classes
brought back to the image's own size by nearest neighbour."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from orchestrator.contract import RUN_FILES
from orchestrator.predict import deploy as dep
from orchestrator.predict.tta import TTA, probabilities, resize_bilinear, scaled_size

# a pixel the net gives no class (outside the scores of a net that crops its label inside)
NO_CLASS = 255


def net_files(run: Path, folder: Path, size: tuple[int, int]) -> tuple[Path, Any]:
    """The deploy prototxt to build (the run's, or one derived from its val net into `folder`
    for an input of `size` (H, W)) and the val net."""
    from nets.prototxt import load_net

    val_path = run / RUN_FILES["val_net"]
    val_path = val_path if val_path.exists() else run / RUN_FILES["train_net"]
    val = load_net(val_path)
    if (run / RUN_FILES["deploy_net"]).exists():
        return run / RUN_FILES["deploy_net"], val
    from google.protobuf import text_format

    derived = folder / RUN_FILES["deploy_net"]
    h, w = size
    try:
        deploy = dep.derive_deploy(val, h, w)
    except ValueError as e:
        raise UserError(
            f"{val_path}: no deploy net can be derived from it: {e}",
            f"write the net's deploy form as {run / RUN_FILES['deploy_net']} (an Input layer for the image)",
        ) from None
    derived.write_text(text_format.MessageToString(deploy))
    return derived, val


def _scores(net: Any, info: dep.DeployInfo, batch: np.ndarray) -> np.ndarray:
    """The net's score blob (N x C x h x w, Caffe's memory) for a preprocessed batch."""
    blob = net.blobs[info.input_blob]
    if blob.data.shape != batch.shape:
        blob.reshape(*batch.shape)
        net.reshape()
    blob.data[...] = batch
    net.forward()
    return net.blobs[info.score_blob].data


def _not_full(info: dep.DeployInfo, scores: np.ndarray, batch: np.ndarray) -> UserError:
    return UserError(
        f"the net's scores '{info.score_blob}' are {scores.shape[2]}x{scores.shape[3]} for an "
        f"input of {batch.shape[2]}x{batch.shape[3]}: not full resolution",
        "crop the upsampled scores to the input (Crop with the data blob), as FCN does",
    )


def full_scores(net: Any, info: dep.DeployInfo, batch: np.ndarray) -> np.ndarray:
    """Class scores (N x C x H x W, a copy) of a preprocessed batch at its own full size."""
    scores = _scores(net, info, batch)
    if scores.shape[2:] != batch.shape[2:]:
        raise _not_full(info, scores, batch)
    return scores.copy()


def forward(net: Any, info: dep.DeployInfo, batch: np.ndarray) -> np.ndarray:
    """Class ids (N x H x W) of a preprocessed batch (N x 3 x H x W) at its own size."""
    scores = _scores(net, info, batch)
    (sh, sw), (h, w) = scores.shape[2:], batch.shape[2:]
    if (sh, sw) != (h, w) and info.label_offset is not None and sh <= h and sw <= w:
        # the net scores the centre its label crop keeps (valid convolutions): no class outside it
        oy, ox = info.label_offset
        out = np.full((len(batch), h, w), NO_CLASS, np.int64)
        out[:, oy : oy + sh, ox : ox + sw] = scores.argmax(axis=1)
        return out
    if scores.shape[2:] != batch.shape[2:]:
        raise _not_full(info, scores, batch)
    return scores.argmax(axis=1)


def tiled(net: Any, info: dep.DeployInfo, x: np.ndarray, fn: Any = forward) -> np.ndarray:
    """A fixed-size net over an image: tiles of its input size (edges padded by reflection),
    stitched; `fn` (forward: class ids, full_scores: scores) runs each tile."""
    _, _, th, tw = info.input_shape
    _, c, h, w = x.shape
    ph, pw = -h % th, -w % tw
    padded = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
    out: np.ndarray | None = None
    for y in range(0, h + ph, th):
        for x0 in range(0, w + pw, tw):
            tile = fn(net, info, padded[:, :, y : y + th, x0 : x0 + tw])
            if out is None:
                out = np.zeros((*tile.shape[:-2], h + ph, w + pw), tile.dtype)
            out[..., y : y + th, x0 : x0 + tw] = tile
    assert out is not None, "an image has at least one tile"
    return out[..., :h, :w]


# builds a net and reshapes its input blob to each shape given (as NxCxHxW): Caffe aborts on a bad one
_TRIAL = (
    "import sys, caffe\nn = caffe.Net(sys.argv[1], caffe.TEST)\nfor s in sys.argv[3:]:\n"
    "    n.blobs[sys.argv[2]].reshape(*map(int, s.split('x')))\n    n.reshape()\n"
)


def shapes_problem(prototxt: Path, input_blob: str, shapes: Sequence[tuple[int, ...]], log: Path) -> str | None:
    """Why the net cannot take these input shapes (Caffe's words), tried in a child because Caffe
    aborts on a shape its layers refuse (a Crop larger than its input); None when it takes them all."""
    from common.child import run_child

    res, _ = run_child(["-c", _TRIAL, str(prototxt), input_blob, *("x".join(map(str, s)) for s in shapes)], log)
    if res.returncode == 0:
        return None
    return (res.fatal or f"the trial exited with {res.returncode}") + (f" (layer {res.layer})" if res.layer else "")


class DeployNet:
    """A run's deploy net with its input and score blobs and its preprocessing, built once:
    with `weights` (predict), or weightless to share a training net's (share_with, pictures).
    `check` refuses, before Caffe sees it, a deploy net that would make Caffe abort (inside a
    training process an abort would end the run)."""

    def __init__(
        self,
        run: Path,
        folder: Path,
        size: tuple[int, int],
        mean_bgr: list[float] | None,
        *,
        weights: str | None = None,
        resize: tuple[int, int] | None = None,
        check: bool = False,
    ) -> None:
        import caffe

        from nets.prototxt import load_net

        deploy_path, val = net_files(run, folder, size)
        self.prototxt = deploy_path
        deploy = load_net(deploy_path)
        problems = dep.check_deploy(deploy) if check else []
        if problems:
            raise ValueError(f"{deploy_path.name} would not build: " + "; ".join(problems))
        self.info = dep.deploy_info(deploy, val)
        self.pre = dep.preprocess_of(val, mean_bgr)
        self.net = caffe.Net(str(deploy_path), *([weights] if weights else []), caffe.TEST)
        self.resize = resize  # the data stage's (width, height), for images not yet resized

    def input_of(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """1 x 3 x H x W float32: resized as the data stage did (or to `size`, width x height),
        minus the mean, scaled."""
        from data_prep.decode import resize

        size = size or self.resize
        img = resize(image, size, nearest=False) if size else image
        x = img.astype(np.float32)
        if self.pre.mean_bgr is not None:
            x -= np.asarray(self.pre.mean_bgr, np.float32)
        x *= self.pre.scale
        return x.transpose(2, 0, 1)[None]

    def tta_refusal(self) -> UserError | None:
        """Why test-time augmentation cannot run on this net (None: it can)."""
        if self.info.label_offset is None:
            return None
        return UserError(
            "test-time augmentation needs class scores for every input pixel; this net scores only "
            f"the centre its label crop keeps (offset {self.info.label_offset})",
            "turn test-time augmentation off for this net (no --tta; validation.tta flip: false, scales: [1])",
        )

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores (N x C x H x W) of a preprocessed batch at its size, tiled for a
        fixed-size net: what test-time augmentation averages (orchestrator.predict.tta)."""
        refusal = self.tta_refusal()
        if refusal is not None:
            raise refusal
        if self.info.fully_convolutional:
            return full_scores(self.net, self.info, x)
        return np.concatenate([tiled(self.net, self.info, x[i : i + 1], full_scores) for i in range(len(x))])

    def probabilities(self, image: np.ndarray, tta: TTA | None = None) -> np.ndarray:
        """1 x C x h x w class probabilities of an H x W x 3 BGR image at the net's input size,
        averaged over `tta`'s views (a plain softmax without): what an ensemble averages."""
        tta = tta or TTA()
        views = source_views(image, self.resize, self.input_of) if tta.active else None
        return probabilities(self.scores, self.input_of(image), tta, views)

    def classes(self, batch: list[np.ndarray], tta: TTA | None = None) -> list[np.ndarray]:
        """Class ids of H x W x 3 BGR images, each at its own original size; with an active
        `tta`, the argmax of its averaged probabilities."""
        xs = [self.input_of(im) for im in batch]
        if tta is not None and tta.active:
            views = [source_views(im, self.resize, self.input_of) for im in batch]
            preds = [probabilities(self.scores, x, tta, v)[0].argmax(axis=0) for x, v in zip(xs, views, strict=True)]
        elif self.info.fully_convolutional and len({x.shape for x in xs}) == 1:
            preds = list(forward(self.net, self.info, np.concatenate(xs)))
        elif self.info.fully_convolutional:
            preds = [forward(self.net, self.info, x)[0] for x in xs]
        else:
            preds = [tiled(self.net, self.info, x)[0] for x in xs]
        return [at_image_size(p, im) for p, im in zip(preds, batch, strict=True)]


def at_image_size(classes: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Class ids brought to the image's own size by nearest neighbour (no class is invented)."""
    from data_prep.decode import resize

    if classes.shape == image.shape[:2]:
        return classes
    return resize(classes.astype(np.uint8), (image.shape[1], image.shape[0]), nearest=True)


def ensemble_classes(nets: Sequence[DeployNet], batch: list[np.ndarray], tta: TTA | None) -> list[np.ndarray]:
    """Class ids of each image from the class probabilities of several snapshots averaged (each
    net with its own preprocessing and `tta`'s views, brought bilinearly to the first net's input
    size), at the image's own size: `predict --ensemble`. One net gives what `classes` gives."""
    out = []
    for image in batch:
        probs = [n.probabilities(image, tta) for n in nets]
        size = probs[0].shape[2:]
        mean = np.mean([resize_bilinear(p, size) for p in probs], axis=0)
        out.append(at_image_size(mean[0].argmax(axis=0), image))
    return out


def source_views(
    image: np.ndarray, resize: tuple[int, int] | None, input_of: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
) -> Callable[[float], np.ndarray] | None:
    """TTA's scale-s input taken from the original `image`, resized once to the data stage's size
    (`resize`, width x height) times s, where the data stage shrank it: enlarging the shrunken view
    blurs it (CamVid at 240x180, the net of recipe v3: the view at 1.5 scored 0.39 enlarged, 0.58
    resized from the 480x360 original; TTA 0.75-1.25 with flip 0.641 -> 0.649 on val). None (the
    net's input is resized, as validation does) when the image already has the net's size."""
    if resize is None or image.shape[:2] == (resize[1], resize[0]):
        return None
    w, h = resize

    def view(s: float) -> np.ndarray:
        sh, sw = scaled_size(h, w, s)
        return input_of(image, (sw, sh))

    return view
