"""Image/label batches read from the two LMDBs *together*, with the same random mirror, crop and
scale applied to both (labels resized nearest-only), mean subtraction, per-epoch shuffling from
a seed, a background prefetch thread, and a resumable state. No Caffe here: `layers.py` wraps it.

Determinism: the order of epoch e is `default_rng([seed, e]).permutation(n)`; the geometric
augmentation draws come from one PCG64 generator and the photometric jitter's from a second one,
so turning jitter on leaves every mirror, crop and scale (and so every label batch) as it was.
Both generators' states are part of `get_state()`. Each prefetched batch carries the state
*after* it, so the state reported is that of the batches actually delivered.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.datastats import read_stats
from data_prep.datum import datum_to_array, parse_datum

_ENVS: dict[str, Any] = {}
_ENVS_LOCK = threading.Lock()


def open_env(path: str | Path) -> Any:
    """One read-only LMDB environment per path and process (LMDB forbids opening one twice)."""
    import lmdb

    key = str(Path(path).resolve())
    with _ENVS_LOCK:
        if key not in _ENVS:
            if not (Path(key) / "data.mdb").is_file():
                raise ValueError(f"{path} is not an LMDB folder (no data.mdb): build it with 'orchestrate data build'")
            _ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, max_readers=512)
        return _ENVS[key]


@dataclass(frozen=True)
class PairedParams:
    """The layer's param_str (DESIGN.md), checked."""

    images: str
    labels: str
    batch_size: int = 1
    mean_bgr: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mirror: bool = False
    crop: tuple[int, int] | None = None  # (h, w)
    scale: tuple[float, float] | None = None  # (min, max)
    jitter: float = 0.0  # photometric: brightness, contrast, saturation factors in [1 - j, 1 + j]
    seed: int = 0
    shuffle: bool = True
    ignore_label: int = 255  # fills label padding when a crop is larger than the (scaled) record
    prefetch: int = 4
    train: bool = True  # TEST phase: no mirror/scale, centre crop


def parse_params(param_str: str, train: bool = True) -> PairedParams:
    """PairedParams from JSON; `mean_bgr` and `ignore_label` default to the build's stats.json."""
    try:
        raw = json.loads(param_str or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"PairedDataLayer param_str is not JSON ({e}): {param_str!r}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"PairedDataLayer param_str must be a JSON object, got {param_str!r}")
    known = set(PairedParams.__dataclass_fields__) - {"train"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"PairedDataLayer param_str: unknown keys {unknown}; known: {sorted(known)}")
    for k in ("images", "labels"):
        if not raw.get(k):
            raise ValueError(f"PairedDataLayer param_str needs '{k}' (an LMDB folder)")
    stats = read_stats(Path(raw["images"]).parent, key="PairedDataLayer images", required=False)
    mean = raw.get("mean_bgr") or stats.get("mean_bgr") or (0, 0, 0)
    p = PairedParams(
        images=str(raw["images"]),
        labels=str(raw["labels"]),
        batch_size=int(raw.get("batch_size", 1)),
        mean_bgr=tuple(float(v) for v in mean),  # type: ignore[arg-type]
        mirror=bool(raw.get("mirror", False)),
        crop=tuple(int(v) for v in raw["crop"]) if raw.get("crop") else None,  # type: ignore[arg-type]
        scale=tuple(float(v) for v in raw["scale"]) if raw.get("scale") else None,  # type: ignore[arg-type]
        seed=int(raw.get("seed", 0)),
        shuffle=bool(raw.get("shuffle", True)),
        jitter=float(raw.get("jitter", 0.0)),
        ignore_label=int(raw.get("ignore_label", stats.get("ignore_label", 255))),
        prefetch=int(raw.get("prefetch", 4)),
        train=train,
    )
    if p.batch_size < 1 or len(p.mean_bgr) != 3 or p.prefetch < 1:
        raise ValueError(f"PairedDataLayer: need batch_size >= 1, prefetch >= 1 and 3 mean_bgr values, got {raw}")
    if p.crop is not None and (len(p.crop) != 2 or min(p.crop) < 1):
        raise ValueError(f"PairedDataLayer: crop must be [h, w] > 0, got {raw['crop']}")
    if p.scale is not None and (len(p.scale) != 2 or not 0 < p.scale[0] <= p.scale[1]):
        raise ValueError(f"PairedDataLayer: scale must be [min, max] with 0 < min <= max, got {raw['scale']}")
    if not 0 <= p.jitter < 1:
        raise ValueError(f"PairedDataLayer: jitter must be in [0, 1), got {raw['jitter']}")
    return p


def _keys(env: Any) -> list[bytes]:
    with env.begin() as txn:
        return list(txn.cursor().iternext(keys=True, values=False))


def _fit(
    img: np.ndarray, lbl: np.ndarray, crop: tuple[int, int], fy: float, fx: float, mean: np.ndarray, ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crop C x H x W image and 1 x H x W label to `crop` at fractional offset (fy, fx), padding
    with the mean (0 after subtraction) and the ignore label where the record is smaller."""
    ch, cw = crop
    _, h, w = img.shape
    if h < ch or w < cw:
        ph, pw = max(ch, h), max(cw, w)
        big = np.empty((3, ph, pw), np.uint8)
        big[:] = np.clip(np.round(mean), 0, 255).astype(np.uint8)[:, None, None]
        bl = np.full((1, ph, pw), ignore, np.uint8)
        y0, x0 = (ph - h) // 2, (pw - w) // 2
        big[:, y0 : y0 + h, x0 : x0 + w], bl[:, y0 : y0 + h, x0 : x0 + w] = img, lbl
        img, lbl, h, w = big, bl, ph, pw
    y, x = int(fy * (h - ch + 1)), int(fx * (w - cw + 1))
    return img[:, y : y + ch, x : x + cw], lbl[:, y : y + ch, x : x + cw]


def _rescale(img: np.ndarray, lbl: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale both by `s`: the image linearly (area when shrinking), the label nearest-only."""
    import cv2

    _, h, w = img.shape
    size = (max(1, round(w * s)), max(1, round(h * s)))
    hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
    out = cv2.resize(hwc, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    # INTER_NEAREST_EXACT samples pixel centres like the linear resize; INTER_NEAREST is off by half a pixel
    lab = cv2.resize(np.ascontiguousarray(lbl[0]), size, interpolation=cv2.INTER_NEAREST_EXACT)
    return out.transpose(2, 0, 1), lab[None]


# ITU-R BT.601 luma weights in the records' BGR order
_LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)


def jitter_image(img: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Photometric jitter of a 3 x H x W BGR image (the label is untouched: geometry stays):
    saturation (blend with the luma), contrast (around the mean luma) and brightness, by the
    three `factors`; float32 clipped to 0..255. Every step is an increasing map of each pixel
    for positive factors, so what is brighter stays brighter."""
    brightness, contrast, saturation = (float(f) for f in factors)
    x = img.astype(np.float32)
    luma = np.tensordot(_LUMA_BGR, x, axes=1)[None]
    x = luma + saturation * (x - luma)
    mean = float(luma.mean())
    x = mean + contrast * (x - mean)
    return np.clip(x * brightness, 0, 255, out=x)


class PairedBatcher:
    """Batches of (float32 N x 3 x H x W data - mean, float32 N x 1 x H x W label)."""

    def __init__(self, params: PairedParams) -> None:
        self.p = params
        self.img_env, self.lbl_env = open_env(params.images), open_env(params.labels)
        self.keys = _keys(self.img_env)
        lkeys = _keys(self.lbl_env)
        if not self.keys:
            raise ValueError(f"{params.images} is an empty LMDB")
        if lkeys != self.keys:
            bad = next(
                (i for i, (a, b) in enumerate(zip(self.keys, lkeys, strict=False)) if a != b),
                min(len(self.keys), len(lkeys)),
            )
            raise ValueError(
                f"{params.images} and {params.labels} do not hold the same keys in the same order "
                f"({len(self.keys)} vs {len(lkeys)} records; first difference at record {bad}): "
                "rebuild both with 'orchestrate data build'"
            )
        self.mean = np.array(params.mean_bgr, np.float32)
        self._perm: tuple[int, np.ndarray] | None = None
        self._delivered = self._initial_state()
        self._thread: threading.Thread | None = None
        self._start(self._delivered)

    # -- state -------------------------------------------------------------------------
    def _initial_state(self) -> dict[str, Any]:
        rng = np.random.Generator(np.random.PCG64([self.p.seed, 1]))
        return {
            "epoch": 0,
            "position": 0,
            "rng": rng.bit_generator.state,
            "seed": self.p.seed,
            "num_records": len(self.keys),
            "shuffle": self.p.shuffle,
            "jitter_rng": np.random.PCG64([self.p.seed, 2]).state,
        }

    def get_state(self) -> dict[str, Any]:
        """JSON-ready state after the last delivered batch (epoch, position, RNG)."""
        return json.loads(json.dumps(self._delivered))

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly after the batch the state was taken at (drops prefetched batches)."""
        if state.get("num_records") != len(self.keys):
            raise ValueError(
                f"data state is for {state.get('num_records')} records, but {self.p.images} has "
                f"{len(self.keys)}: resume with the same data"
            )
        self._stop()
        self._delivered = json.loads(json.dumps(state))
        self._start(self._delivered)

    # -- order and one batch (pure given the state) -------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Record indices of `epoch` (cached for the current epoch)."""
        if self._perm is None or self._perm[0] != epoch:
            n = len(self.keys)
            perm = np.random.default_rng([self.p.seed, epoch]).permutation(n) if self.p.shuffle else np.arange(n)
            self._perm = (epoch, perm)
        return self._perm[1]

    def make_batch(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The batch that follows `state`, and the state after it."""
        epoch, pos = state["epoch"], state["position"]
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng"]
        jrng = np.random.Generator(np.random.PCG64())
        # states saved before jitter existed have no second stream: it starts where a new run's does
        jrng.bit_generator.state = state.get("jitter_rng") or self._initial_state()["jitter_rng"]
        samples = []
        # buffers=True: records are read straight from the LMDB map (views valid inside the txn)
        with self.img_env.begin(buffers=True) as it, self.lbl_env.begin(buffers=True) as lt:
            for _ in range(self.p.batch_size):
                key = self.keys[int(self.order(epoch)[pos])]
                pos += 1
                if pos == len(self.keys):
                    epoch, pos = epoch + 1, 0
                img = datum_to_array(parse_datum(it.get(key)))
                lbl = datum_to_array(parse_datum(lt.get(key)))
                img, lbl = self._augment(img, lbl, rng, key)
                if self.p.train and self.p.jitter:
                    img = jitter_image(img, jrng.uniform(1 - self.p.jitter, 1 + self.p.jitter, 3))
                samples.append((img, lbl))
            shapes = {s[0].shape for s in samples}
            if len(shapes) > 1:
                raise ValueError(
                    f"records in one batch differ in size {sorted(shapes)}: set 'crop' in the "
                    "PairedDataLayer param_str or build with --resize"
                )
            data = np.empty((len(samples), *samples[0][0].shape), np.float32)
            label = np.empty((len(samples), *samples[0][1].shape), np.float32)
            for i, (img, lbl) in enumerate(samples):
                np.subtract(img, self.mean[:, None, None], out=data[i], dtype=np.float32)
                label[i] = lbl
        after = dict(state, epoch=epoch, position=pos, rng=rng.bit_generator.state, jitter_rng=jrng.bit_generator.state)
        return data, label, after

    def _augment(
        self, img: np.ndarray, lbl: np.ndarray, rng: np.random.Generator, key: bytes
    ) -> tuple[np.ndarray, np.ndarray]:
        if img.shape[1:] != lbl.shape[1:] or img.shape[0] != 3 or lbl.shape[0] != 1:
            raise ValueError(
                f"record {key.decode(errors='replace')}: image {img.shape} and label {lbl.shape} "
                "do not match (want 3 x H x W and 1 x H x W)"
            )
        train, crop = self.p.train, self.p.crop
        if train and self.p.scale is not None:
            if crop is None:
                crop = (img.shape[1], img.shape[2])  # keep the record's size so batches stack
            img, lbl = _rescale(img, lbl, float(rng.uniform(*self.p.scale)))
        if crop is not None:
            fy, fx = (float(rng.random()), float(rng.random())) if train else (0.5, 0.5)
            img, lbl = _fit(img, lbl, crop, fy, fx, self.mean, self.p.ignore_label)
        if train and self.p.mirror and rng.random() < 0.5:
            img, lbl = img[:, :, ::-1], lbl[:, :, ::-1]
        return img, lbl

    # -- prefetch thread ------------------------------------------------------------------
    def _start(self, state: dict[str, Any]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.p.prefetch)
        self._halt = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(state, self._queue, self._halt), name="PairedDataLayer-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, state: dict[str, Any], q: queue.Queue[Any], halt: threading.Event) -> None:
        while not halt.is_set():
            try:
                item: Any = self.make_batch(state)
                state = item[2]
            except Exception as e:  # handed to the consumer, who raises it
                item = e
            while not halt.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return

    def _stop(self) -> None:
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The next prefetched batch and the state after it; call `delivered(state)` once it is used."""
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def delivered(self, state: dict[str, Any]) -> None:
        """Record that the batch ending at `state` reached the net."""
        self._delivered = state

    def close(self) -> None:
        """Stop the prefetch thread."""
        self._stop()
