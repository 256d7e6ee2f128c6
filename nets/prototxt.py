"""Reading what the doctor is given (net and solver prototxt, caffemodel) and the
`# segorch-meta:` header a generated net carries. Bad input raises UserError naming the file
and, for a parse error, the line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
                meta = json.loads(s[len(META_PREFIX):])
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
    return p.read_text(errors="replace")


def _parse(text: str, message: Any, path: str | Path, what: str) -> Any:
    from google.protobuf import text_format

    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        line = e.GetLine() if hasattr(e, "GetLine") else None
        where = f"{path}, line {line}" if line else str(path)
        raise UserError(f"cannot parse the {what} {where}: {e}",
                        f"fix the {what} text at {where} (Caffe prototxt, text protobuf)") from None
    return message


def parse_net(text: str, path: str | Path = "<text>") -> Any:
    """NetParameter from prototxt text."""
    from caffe.proto import caffe_pb2

    return _parse(text, caffe_pb2.NetParameter(), path, "net prototxt")


def load_net(path: str | Path) -> Any:
    """NetParameter from a prototxt file."""
    return parse_net(_read_text(path, "net prototxt"), path)


def load_solver(path: str | Path) -> Any:
    """SolverParameter from a solver prototxt file."""
    from caffe.proto import caffe_pb2

    return _parse(_read_text(path, "solver prototxt"), caffe_pb2.SolverParameter(), path,
                  "solver prototxt")


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
        raise UserError(f"cannot read the weights {p}: not a binary NetParameter ({e})",
                        "pass a .caffemodel written by Caffe (not a prototxt or solverstate)") from None
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
