"""`orchestrate sweep --address`: an address where no Ray cluster answers is said in seconds with
its fix (exit 2, nothing written), not after Ray's 14 minutes of retries. The family: every kind
of place an address can lead (a closed port, an unknown host, a web server, a silent server, a
gRPC server), every malformed address, and every place it can come from (--address, RAY_ADDRESS,
neither: a new local Ray even where a head runs). A real Ray head passes
(tests/orchestrator/test_sweep.py sweeps on one through this check)."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.sweep.address import address_problem, check_address, describe, resolve_address, split_address
from tests.orchestrator.conftest import experiment, orchestrate
from tests.orchestrator.test_sweep import ray_head  # noqa: F401 (a fixture)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Reply(socketserver.BaseRequestHandler):
    reply = b""

    def handle(self) -> None:
        self.request.recv(64)
        if self.reply:
            self.request.sendall(self.reply)
        else:
            time.sleep(3)  # a server that reads and never answers


def serve(reply: bytes) -> Iterator[str]:
    handler = type("Handler", (_Reply,), {"reply": reply})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as srv:
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        yield f"127.0.0.1:{srv.server_address[1]}"
        srv.shutdown()


@pytest.fixture
def web_server() -> Iterator[str]:
    yield from serve(b"HTTP/1.0 400 Bad Request\r\n\r\n")


@pytest.fixture
def silent_server() -> Iterator[str]:
    yield from serve(b"")


@pytest.fixture
def grpc_like() -> Iterator[str]:
    # what a Ray head's GCS sent to the preface (recorded from ray 2.60): a SETTINGS frame
    yield from serve(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00" + bytes(24))


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("127.0.0.1", "expected HOST:PORT"),
        (":6379", "expected HOST:PORT"),
        ("127.0.0.1:", "is not a port"),
        ("127.0.0.1:abc", "is not a port"),
        ("127.0.0.1:0", "is not a port"),
        ("127.0.0.1:70000", "is not a port"),
        ("ray://127.0.0.1:x", "is not a port"),
    ],
)
def test_a_malformed_address_is_said(address: str, said: str) -> None:
    problem = address_problem(address)
    assert problem is not None and said in problem


def test_address_forms_are_split() -> None:
    assert split_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert split_address("ray://head.local:10001") == ("head.local", 10001)
    assert split_address("[::1]:6379") == ("::1", 6379)
    assert address_problem("auto") is None and address_problem("local") is None  # Ray's own words
    assert address_problem("anyscale://my-cluster") is None  # a Ray Client plug-in's scheme


def test_each_place_an_address_can_lead(web_server: str, silent_server: str, grpc_like: str) -> None:
    t = time.monotonic()
    assert "nothing answers there" in (address_problem(f"127.0.0.1:{closed_port()}") or "")
    assert "nothing answers there" in (address_problem("no-such-host.invalid:6379") or "")
    assert "not a Ray cluster" in (address_problem(web_server) or "")
    assert "not a Ray cluster" in (address_problem(silent_server, timeout=1.0) or "")
    assert address_problem(grpc_like) is None
    assert time.monotonic() - t < 30  # said in seconds, not Ray's minutes
    with pytest.raises(Exception, match="leave --address out") as e:
        check_address(web_server)
    assert web_server in str(e.value)


def test_where_the_address_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == ("local", "")
    assert describe(*resolve_address(None)) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert resolve_address(None) == ("10.0.0.5:6379", "RAY_ADDRESS")
    assert describe(*resolve_address(None)) == "cluster at 10.0.0.5:6379 (RAY_ADDRESS)"
    assert resolve_address("10.0.0.6:6379") == ("10.0.0.6:6379", "--address")  # the flag wins
    with pytest.raises(Exception, match="unset RAY_ADDRESS") as e:
        check_address(f"127.0.0.1:{closed_port()}", "RAY_ADDRESS")
    assert "RAY_ADDRESS=127.0.0.1:" in str(e.value)


@pytest.mark.caffe
@pytest.mark.parametrize("source", ["--address", "RAY_ADDRESS"])
def test_sweep_on_a_dead_address_says_so_and_writes_nothing(
    synth_lmdb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(experiment(synth_lmdb)))
    sweep = {"name": "t", "base": str(tmp_path / "base.yaml"), "space": {"solver.base_lr": {"grid": [0.001]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    address = f"127.0.0.1:{closed_port()}"
    flag = ["--address", address] if source == "--address" else []
    if source == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
    out = tmp_path / "out"
    t = time.monotonic()
    r = orchestrate("sweep", str(tmp_path / "sweep.yaml"), *flag, "--out", str(out), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    said = f"--address {address}" if source == "--address" else f"RAY_ADDRESS={address}"
    assert f"{said}: nothing answers there" in r.stderr and "ray start --head" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert time.monotonic() - t < 60


LOCAL_GCS = """
import ray
ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False, num_cpus=1)
print("gcs", ray.get_runtime_context().gcs_address)
"""


@pytest.mark.ray
@pytest.mark.slow
def test_local_is_a_new_ray_even_where_a_head_runs(ray_head: str) -> None:  # noqa: F811
    # what the sweep passes without --address or RAY_ADDRESS; ray.init() itself would join the head
    r = subprocess.run([sys.executable, "-c", LOCAL_GCS], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    gcs = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("gcs ")]
    port = ray_head.rsplit(":", 1)[1]
    assert gcs and not gcs[0].endswith(f":{port}"), (gcs, ray_head)
    assert address_problem(ray_head) is None  # a real head answers the probe
