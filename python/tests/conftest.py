"""Fixtures: a real `ringside serve` per test, on a temporary socket and a free port.

The binary is $RINGSIDE_BIN, else <repo>/target/debug/ringside (python/run-tests.sh builds
it). Nothing of ringside is mocked: the producer is the built wheel, the sidecar the real
binary, the subscriber talks gRPC over loopback.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time
from typing import Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# Ring and frame sizes for the tests: small enough that a test fills nothing by accident,
# large enough that nothing laps unless a test wants it to.
RING_SIZE = "4MiB"
MAX_FRAME = 65536


def ringside_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RINGSIDE_BIN", REPO / "target" / "debug" / "ringside"))
    if not path.exists():
        pytest.exit(
            f"{path} not found: build it with `cargo build -p ringside --bin ringside` "
            "or set RINGSIDE_BIN (python/run-tests.sh does this)",
            returncode=2,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    """A `ringside serve` process. `kill()` is SIGKILL; `start()` again reuses the same
    socket path and port (a restart as a deploy would do it)."""

    def __init__(self, tmp: pathlib.Path, extra: tuple[str, ...] = ()):
        self.dir = tmp
        self.socket = str(tmp / "ringside.sock")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.extra = extra
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def log(self) -> pathlib.Path:
        return self.dir / f"serve-{self.starts}.log"

    def start(self, extra: tuple[str, ...] = ()) -> "Sidecar":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        args = [
            str(ringside_bin()), "serve",
            "--socket", self.socket,
            "--listen", f"127.0.0.1:{self.port}",
            "--ring-size", RING_SIZE,
            "--max-payload", str(MAX_FRAME),
            "--adopt-grace", "1s",
            *self.extra,
            *extra,
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "info"}
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringside serve exited ({self.proc.returncode}):\n{self.stderr()}")
            if os.path.exists(self.socket):
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ringside serve not ready after 30 s:\n{self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        """SIGTERM (graceful), and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def sidecar_factory(tmp_path):
    """Makes sidecars (not started); kills every one at the end of the test."""
    made: list[Sidecar] = []

    def make(*extra: str, subdir: str = "") -> Sidecar:
        d = tmp_path / (subdir or f"s{len(made)}")
        d.mkdir()
        s = Sidecar(d, tuple(extra))
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


@pytest.fixture
def sidecar(sidecar_factory) -> Sidecar:
    """A running sidecar."""
    return sidecar_factory().start()


@pytest.fixture
def producer(sidecar):
    import ringside

    p = ringside.Producer(sidecar.socket)
    assert p.wait_connected(10), p.last_error
    yield p
    p.close()


def collect(endpoint: str, count: int, timeout: float = 20.0, **kwargs) -> list:
    """Subscribes and returns the first `count` values (fails after `timeout`)."""
    import threading

    import ringside

    out: list = []
    sub = ringside.subscribe(endpoint, **kwargs)
    timer = threading.Timer(timeout, sub.close)
    timer.start()
    try:
        for item in sub:
            out.append(item)
            if len(out) >= count:
                break
    finally:
        timer.cancel()
        sub.close()
    assert len(out) >= count, f"got {len(out)} of {count} values within {timeout} s: {out[-5:]}"
    return out
