"""Shared fixtures of the Python (grpcio) client tests.

These tests drive a real `ringside serve` and real `ringside load` producer processes
over loopback with grpcio, a client written from `proto/ringside/v1/ringside.proto`
alone: the stubs are generated from it with grpcio-tools at test time into a temporary
directory.

Binaries: `$RINGSIDE_BIN` (default `target/debug/ringside`, then
`target/debug/ringside-under-test`); producers run `$RINGSIDE_LOAD_BIN` when set (else the
same binary), so that the tests can be pointed at an older sidecar while still using a
producer that has the flags they need.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]


def _binary(env_name, fallbacks):
    value = os.environ.get(env_name)
    if value:
        path = Path(value)
        if not path.exists():
            pytest.exit(f"${env_name}={value} does not exist", returncode=2)
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for name in fallbacks:
        path = target / "debug" / name
        if path.exists():
            return path
    pytest.exit(
        f"no ringside binary: set ${env_name}, or build one with `cargo build -p ringside`",
        returncode=2,
    )


RINGSIDE = _binary("RINGSIDE_BIN", ["ringside", "ringside-under-test"])
LOAD = Path(os.environ["RINGSIDE_LOAD_BIN"]) if os.environ.get("RINGSIDE_LOAD_BIN") else RINGSIDE


def _generate_stubs():
    """Generates ringside_pb2 / ringside_pb2_grpc from the proto into a temp dir."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="rs-pystubs-"))
    # Top-level modules ringside_pb2 / ringside_pb2_grpc (no `ringside` package, which
    # could meet the project's own Python package).
    proto_dir = REPO / "proto" / "ringside" / "v1"
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto_dir / "ringside.proto"),
        ]
    )
    if rc != 0:
        pytest.exit(f"protoc failed ({rc}) on {proto_dir}/ringside.proto", returncode=2)
    sys.path.insert(0, str(out))
    return out


STUB_DIR = _generate_stubs()
import ringside_pb2 as pb  # noqa: E402
import ringside_pb2_grpc as pb_grpc  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    """A running `ringside serve` on a fresh port and socket."""

    def __init__(self, tmp, args=()):
        self.dir = Path(tempfile.mkdtemp(prefix="s-", dir=tmp))
        self.port = free_port()
        self.socket = self.dir / "ringside.sock"
        self.log = self.dir / f"serve-{self.port}.log"
        self.addr = f"127.0.0.1:{self.port}"
        cmd = [
            str(RINGSIDE),
            "serve",
            "--socket",
            str(self.socket),
            "--listen",
            self.addr,
            "--adopt-grace",
            "300ms",
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            env={**os.environ, "RUST_LOG": "info"},
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringside serve exited ({self.proc.returncode}):\n{self.stderr()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if self.socket.exists():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ringside serve not ready:\n{self.stderr()}")
            time.sleep(0.02)

    def stderr(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def channel(self, **options):
        opts = [("grpc.max_receive_message_length", 64 << 20)]
        opts += list(options.items())
        return grpc.insecure_channel(self.addr, options=opts)

    def stub(self, channel=None):
        return pb_grpc.RingsideStub(channel or self.channel())

    def info(self):
        with self.channel() as ch:
            return self.stub(ch).Info(pb.InfoRequest(), timeout=5)

    def load(self, *args):
        """Runs `ringside load --json --quiet ARGS` to completion; returns its stdout."""
        out = subprocess.run(
            [str(LOAD), "load", "--socket", str(self.socket), "--json", "--quiet", *args],
            capture_output=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        return out.stdout.decode()

    def spawn_load(self, *args):
        return subprocess.Popen(
            [str(LOAD), "load", "--socket", str(self.socket), "--json", "--quiet", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture
def sidecar_factory():
    """Starts sidecars with the given serve flags; kills them at the end of the test."""
    started = []
    tmp = tempfile.mkdtemp(prefix="rs-py-")

    def start(*args):
        s = Sidecar(tmp, args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()
    shutil.rmtree(tmp, ignore_errors=True)


def batch_accounts(b):
    """True when resume_seq - from_seq = frames + losses in range + filtered + discarded."""
    lost = sum(l.frames for l in b.losses if l.first_seq >= b.from_seq)
    return b.resume_seq - b.from_seq == len(b.frames) + lost + b.filtered + b.discarded
