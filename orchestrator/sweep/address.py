"""`orchestrate sweep --address` checked before anything is planned or written. ray.init on an
address where no Ray cluster answers retries for about 14 minutes (Ray 2.60: 20 tries of about
41 s each, measured on a closed port and on a web server's port alike), so a mistyped port looked
like a hang. A Ray head's GCS (and Ray Client's server, ray://) is a gRPC server: it answers
HTTP/2's connection preface with a SETTINGS frame. A closed port, an unknown host or another kind
of server does not, and is said in seconds.

Where the address comes from is said too: `--address`, else `RAY_ADDRESS` (which ray.init reads
on its own), else a new local Ray. ray.init without an address would also join a head that
`ray start` left running on this machine, while the console said "local"."""

from __future__ import annotations

import os
import socket

from common.errors import UserError

# HTTP/2 client connection preface, then an empty SETTINGS frame (length 0, type 4, stream 0)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS = 0x04
RAY_OWN_WORDS = ("auto", "local")  # Ray resolves these itself, and fails fast when it cannot
LOCAL = "local"  # ray.init's word for a new Ray of this process's own
FROM_FLAG, FROM_ENV = "--address", "RAY_ADDRESS"


def resolve_address(address: str | None) -> tuple[str, str]:
    """(what ray.init gets, where it came from): `--address`, else the RAY_ADDRESS environment
    variable, else a new local Ray (never a cluster found on this machine, unsaid)."""
    if address:
        return address, FROM_FLAG
    env = os.environ.get(FROM_ENV, "")
    return (env, FROM_ENV) if env else (LOCAL, "")


def describe(address: str, source: str) -> str:
    """The console's words for it: `local`, `cluster at HOST:PORT (RAY_ADDRESS)`."""
    if address == LOCAL:
        return "local"
    return f"cluster at {address}" + (f" ({source})" if source == FROM_ENV else "")


def split_address(address: str) -> tuple[str, int] | str:
    """(host, port) of `HOST:PORT`, `[IPv6]:PORT` or `ray://HOST:PORT`; else why it is not one."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        return "expected HOST:PORT (what ray start --head prints), ray://HOST:PORT or auto"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"{port!r} is not a port (1-65535)"
    return host, int(port)


def speaks_http2(sock: socket.socket) -> bool:
    """Whether the peer answers the HTTP/2 preface with a SETTINGS frame (as gRPC servers do)."""
    sock.sendall(PREFACE)
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        if not chunk:
            return False
        head += chunk
    return head[3] == SETTINGS


def address_problem(address: str, timeout: float = 5.0) -> str | None:
    """What is wrong with a Ray address (None when a gRPC server answers there); Ray's own
    words (auto, local) and other schemes are left to Ray."""
    if address in RAY_OWN_WORDS or ("://" in address and not address.startswith("ray://")):
        return None  # another scheme is a Ray Client plug-in's (module://...): Ray's to resolve
    where = split_address(address)
    if isinstance(where, str):
        return where
    try:
        with socket.create_connection(where, timeout=timeout) as sock:
            sock.settimeout(timeout)
            try:
                if speaks_http2(sock):
                    return None
            except OSError:
                pass
    except OSError as e:
        return f"nothing answers there ({e.strerror or e})"
    return f"something answers there, but not a Ray cluster (no gRPC reply in {timeout:g} s)"


def check_address(address: str, source: str = FROM_FLAG, timeout: float = 5.0) -> None:
    """UserError naming the address, where it came from, the problem and the fix; before any
    file is written."""
    problem = address_problem(address, timeout)
    if problem:
        said = f"{FROM_ENV}={address}" if source == FROM_ENV else f"{source} {address}"
        instead = "unset RAY_ADDRESS" if source == FROM_ENV else "leave --address out"
        fix = f"start Ray there (ray start --head --port PORT) and give the address it prints, or {instead}"
        raise UserError(f"{said}: {problem}", fix)
