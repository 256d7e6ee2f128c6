"""Caffe Python layers. This module is loaded *by Caffe* (python_param.module), so it imports
caffe at the top: a Python layer must subclass caffe.Layer. The logic lives in paired.py.

    layer { name: "data" type: "Python" top: "data" top: "label"
            python_param { module: "data_prep.layers" layer: "PairedDataLayer"
                           param_str: '{"images": "D/images", "labels": "D/labels", "batch_size": 4,
                                        "mean_bgr": [104, 117, 123], "mirror": true, "crop": [320, 320],
                                        "scale": [0.75, 1.25], "seed": 1, "shuffle": true}' } }

Optional extra keys: `ignore_label` (label padding; default: stats.json next to the LMDBs, else
255), `prefetch` (batches queued ahead, default 4) and `jitter` (photometric jitter j in [0, 1):
brightness, contrast and saturation factors drawn from [1 - j, 1 + j] per image, from a random
stream of its own; default 0, off). `mean_bgr` defaults to stats.json too.
In the TEST phase mirror, scale and jitter are off and the crop is centred.
"""

from __future__ import annotations

from typing import Any

import caffe

from data_prep.paired import PairedBatcher, parse_params


class PairedDataLayer(caffe.Layer):
    """Tops `data` (N x 3 x H x W, mean subtracted) and `label` (N x 1 x H x W), augmented together."""

    def setup(self, bottom: Any, top: Any) -> None:
        if len(bottom) != 0 or len(top) != 2:
            raise ValueError(
                f"PairedDataLayer takes no bottoms and two tops (data, label); got "
                f"{len(bottom)} bottoms and {len(top)} tops"
            )
        self.batcher = PairedBatcher(parse_params(self.param_str, train=self.phase == caffe.TRAIN))
        self._pending: tuple[Any, Any, dict[str, Any]] | None = None

    def reshape(self, bottom: Any, top: Any) -> None:
        # Caffe calls reshape before every forward (and once at net setup): take the next batch
        # here but only count it as delivered when forward hands it to the net.
        if self._pending is None:
            self._pending = self.batcher.next_batch()
        data, label, _ = self._pending
        top[0].reshape(*data.shape)
        top[1].reshape(*label.shape)

    def forward(self, bottom: Any, top: Any) -> None:
        if self._pending is None:
            self.reshape(bottom, top)
        assert self._pending is not None
        data, label, state = self._pending
        top[0].data[...] = data
        top[1].data[...] = label
        self.batcher.delivered(state)
        self._pending = None

    def backward(self, top: Any, propagate_down: Any, bottom: Any) -> None:
        pass

    def get_state(self) -> dict[str, Any]:
        """Epoch, position and RNG state after the last batch this layer delivered (JSON-ready)."""
        return self.batcher.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue the same sequence as the run the state came from."""
        self._pending = None
        self.batcher.set_state(state)
