"""Reading what the doctor is given (net and solver prototxt, caffemodel) and the
`# segorch-meta:` header a generated net carries. Bad input raises UserError naming the file
and, for a parse error, the line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from common.datastats import STATS_FILE, read_stats
from common.errors import UserError

META_PREFIX = "# segorch-meta:"


def meta_header(meta: dict[str, Any]) -> str:
    """The leading comment line that lets the doctor read a generated net's choices."""
    return f"{META_PREFIX} {json.dumps(meta, sort_keys=True)}\n"


def read_meta(text: str) -> dict[str, Any] | None:
    """The meta dict from a prototxt's leading comment lines, or None."""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(META_PREFIX):
            try:
                meta = json.loads(s[len(META_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return meta if isinstance(meta, dict) else None
        if s and not s.startswith("#"):
            return None
    return None


def _read_text(path: str | Path, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file not found: {p}", f"check the path to the {what} file")
    data = p.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(
            f"the {what} {p} is a binary file, not a text prototxt (a .caffemodel or .solverstate?)",
            f"pass the {what} as text; weights go to --weights",
        ) from None


_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_UNKNOWN_VALUE = re.compile(r'Enum type "([\w.]+)" has no value named (\w+)')


def did_you_mean(error: str) -> tuple[str, str] | None:
    """("kernel_siz", "kernel_size") for a parse error about `kernel_siz`: the closest field (or
    enum value) of the message the error names, as the YAML keys get."""
    import difflib

    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    m = _UNKNOWN_FIELD.search(error)
    try:
        if m:
            names = [f.name for f in pool.FindMessageTypeByName(m.group(1)).fields]
        elif (m := _UNKNOWN_VALUE.search(error)) is not None:
            names = [v.name for v in pool.FindEnumTypeByName(m.group(1)).values]
        else:
            return None
    except KeyError:
        return None
    close = difflib.get_close_matches(m.group(2), names, n=1, cutoff=0.6)
    return (m.group(2), close[0]) if close else None


def _parse_error(e: Any, path: str | Path, what: str) -> UserError:
    line = e.GetLine() if hasattr(e, "GetLine") else None
    where = f"{path}, line {line}" if line else str(path)
    close = did_you_mean(str(e))
    if close:
        return UserError(
            f"cannot parse the {what} {where}: {e} (did you mean {close[1]!r}?)",
            f"write {close[1]} instead of {close[0]} in the {what} at {where}",
        )
    return UserError(
        f"cannot parse the {what} {where}: {e}", f"fix the {what} text at {where} (Caffe prototxt, text protobuf)"
    )


def _parse(text: str, message: Any, path: str | Path, what: str) -> Any:
    from google.protobuf import text_format

    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise _parse_error(e, path, what) from None
    return message


def parse_net(text: str, path: str | Path = "<text>") -> Any:
    """NetParameter from prototxt text; a parse error on a fork's fields (caffe-segnet) says so
    and gives the BVLC equivalents."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from nets import forks

    try:
        return text_format.Parse(text, caffe_pb2.NetParameter())
    except text_format.ParseError as e:
        hits = forks.scan(text)
        raise (forks.fork_error(path, hits, str(e)) if hits else _parse_error(e, path, "net prototxt")) from None


def load_net(path: str | Path) -> Any:
    """NetParameter from a prototxt file that defines at least one layer."""
    net = parse_net(_read_text(path, "net prototxt"), path)
    if not len(net.layer) and not len(net.layers):
        raise UserError(
            f"the net prototxt {path} defines no layers",
            "pass the net's train (or train_val) prototxt, with its layer { ... } blocks",
        )
    return net


def load_solver(path: str | Path) -> Any:
    """SolverParameter from a solver prototxt file."""
    from caffe.proto import caffe_pb2

    return _parse(_read_text(path, "solver prototxt"), caffe_pb2.SolverParameter(), path, "solver prototxt")


def load_weights(path: str | Path) -> Any:
    """NetParameter with blobs from a binary caffemodel (new `layer` or V1 `layers`)."""
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}", "check the path to the .caffemodel")
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(p.read_bytes())
    except DecodeError as e:
        raise UserError(
            f"cannot read the weights {p}: not a binary NetParameter ({e})",
            "pass a .caffemodel written by Caffe (not a prototxt or solverstate)",
        ) from None
    return net


def weight_blobs(weights: Any) -> dict[str, list[Any]]:
    """Layer name -> its BlobProtos, for every layer of a caffemodel that carries blobs."""
    out: dict[str, list[Any]] = {}
    for layer in list(weights.layer) + list(weights.layers):
        if len(layer.blobs):
            out[layer.name] = list(layer.blobs)
    return out


def weight_layer_names(path: str | Path) -> set[str]:
    """Names of the layers a caffemodel provides weights for."""
    return set(weight_blobs(load_weights(path)))


def _all_zero(blob: Any) -> bool:
    # any() stops at the first non-zero value: only all-zero blobs are read to the end
    return not any(blob.data) and not any(blob.double_data)


def weight_layer_info(path: str | Path) -> tuple[set[str], set[str]]:
    """(names of the layers a caffemodel provides weights for, those of them whose weights,
    the first blob, are all zero: a classifier a net surgery saved as zeros, as DIGITS' does)."""
    blobs = weight_blobs(load_weights(path))
    return set(blobs), {name for name, bs in blobs.items() if _all_zero(bs[0])}


def load_data_stats(path: str | Path) -> dict[str, Any]:
    """The data stage's stats.json (num_classes, ignore_label, ...) from its output directory
    (DIR/stats.json, or DIR/train/stats.json for a split build) or the file itself."""
    p = Path(path)
    candidates = [p] if p.is_file() else [p / STATS_FILE, p / "train" / STATS_FILE]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise UserError(
            f"no {STATS_FILE} in {p} (looked for {', '.join(str(c) for c in candidates)})",
            "pass the data stage's output directory (`orchestrate data build --out DIR`)",
        )
    stats = read_stats(found, key="--data")
    if not isinstance(stats.get("num_classes"), int):
        raise UserError(f"{found} has no integer num_classes", "rebuild the data with `orchestrate data build`")
    return stats
