"""Nanoseconds per `send` from Python, next to a loop that only slices `bytes` and next to
nats-py publishing to a local nats-server, measured in one run.

    python/.venv/bin/python python/bench/bench_send.py [--iterations N] [--repeats R]

Needs the ringside wheel installed in the venv (python/run-tests.sh does that), the
`ringside` binary (target/release/ringside, else target/debug/ringside, or --ringside-bin),
nats-py (python/requirements-bench.txt) and nats-server (Debian: apt-get install
nats-server). Starts both servers on loopback on free ports and stops them at the end.

Every operation runs `iterations` times per repeat; repeats of all operations are
interleaved (round robin) so background load hits them alike; the table gives the median
ns per operation over the repeats, and min..max.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import ringside

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within 30 s")


def find_ringside(arg: str | None) -> str:
    if arg:
        return arg
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "ringside"
        if p.exists():
            return str(p)
    raise SystemExit("no ringside binary: cargo build --release -p ringside, or pass --ringside-bin")


# -- the timed loops -------------------------------------------------------------------------
# Each returns the elapsed ns for `n` operations. Locals are bound outside the loop, as a
# careful Python programmer would write a hot loop.


def loop_empty(n, size, ctx):
    t = time.perf_counter_ns()
    for _ in range(n):
        pass
    return time.perf_counter_ns() - t


def loop_slice(n, size, ctx):
    data = ctx["data"]
    t = time.perf_counter_ns()
    for _ in range(n):
        data[0:size]
    return time.perf_counter_ns() - t


def loop_send(n, size, ctx):
    send, payload = ctx["producer"].send, ctx["payload"]
    t = time.perf_counter_ns()
    for _ in range(n):
        send("bench", payload)
    return time.perf_counter_ns() - t


def loop_slice_send(n, size, ctx):
    send, data = ctx["producer"].send, ctx["data"]
    t = time.perf_counter_ns()
    for _ in range(n):
        send("bench", data[0:size])
    return time.perf_counter_ns() - t


def loop_memoryview_send(n, size, ctx):
    send, view = ctx["producer"].send, memoryview(ctx["data"])
    t = time.perf_counter_ns()
    for _ in range(n):
        send("bench", view[0:size])
    return time.perf_counter_ns() - t


def loop_reserve(n, size, ctx):
    reserve, payload = ctx["producer"].reserve, ctx["payload"]
    t = time.perf_counter_ns()
    for _ in range(n):
        with reserve("bench", size) as buf:
            buf[:] = payload
    return time.perf_counter_ns() - t


def loop_pack_send(n, size, ctx):
    send, pack, vals = ctx["producer"].send, ctx["struct"].pack, ctx["values"]
    t = time.perf_counter_ns()
    for _ in range(n):
        send("bench", pack(*vals))
    return time.perf_counter_ns() - t


def loop_reserve_pack_into(n, size, ctx):
    reserve, pack_into, vals = ctx["producer"].reserve, ctx["struct"].pack_into, ctx["values"]
    t = time.perf_counter_ns()
    for _ in range(n):
        with reserve("bench", size) as buf:
            pack_into(buf, 0, *vals)
    return time.perf_counter_ns() - t


def loop_read_send(n, size, ctx):
    send, stream = ctx["producer"].send, ctx["stream"]
    seek, read = stream.seek, stream.read
    t = time.perf_counter_ns()
    for _ in range(n):
        seek(0)
        send("bench", read(size))
    return time.perf_counter_ns() - t


def loop_reserve_readinto(n, size, ctx):
    reserve, stream = ctx["producer"].reserve, ctx["stream"]
    seek, readinto = stream.seek, stream.readinto
    t = time.perf_counter_ns()
    for _ in range(n):
        seek(0)
        with reserve("bench", size) as buf:
            readinto(buf)
    return time.perf_counter_ns() - t


def loop_nats(n, size, ctx):
    return ctx["loop"].run_until_complete(_nats(ctx["nats"], n, ctx["payload"]))


async def _nats(nc, n, payload):
    publish = nc.publish
    t = time.perf_counter_ns()
    for _ in range(n):
        await publish("bench", payload)
    await nc.flush()
    return time.perf_counter_ns() - t


def loop_jetstream(n, size, ctx):
    return ctx["loop"].run_until_complete(_jetstream(ctx["js"], n, ctx["payload"]))


async def _jetstream(js, n, payload):
    publish = js.publish
    t = time.perf_counter_ns()
    for _ in range(n):
        await publish("js.bench", payload)
    return time.perf_counter_ns() - t


OPERATIONS = [
    # (key, label, iterations divisor)
    ("empty", "empty `for` loop (the loop's own cost)", 1),
    ("slice", "`data[0:size]` (bytes slicing only)", 1),
    ("send", "`producer.send(topic, payload)`", 1),
    ("slice_send", "`producer.send(topic, data[0:size])`", 1),
    ("memoryview_send", "`producer.send(topic, view[0:size])` (memoryview slice)", 1),
    ("reserve", "`with producer.reserve(topic, size) as buf: buf[:] = payload`", 1),
    ("pack_send", "`producer.send(topic, st.pack(*values))` (payload built from size/8 ints)", 1),
    ("reserve_pack_into", "`with producer.reserve(topic, size) as buf: st.pack_into(buf, 0, *values)`", 1),
    ("read_send", "`stream.seek(0); producer.send(topic, stream.read(size))` (io.BytesIO)", 1),
    ("reserve_readinto", "`stream.seek(0); with producer.reserve(topic, size) as buf: stream.readinto(buf)`", 1),
    ("nats", "nats-py `await nc.publish(subject, payload)` (+ one flush)", 1),
    ("jetstream", "nats-py JetStream `await js.publish(subject, payload)` (waits for the ack)", 100),
]
LOOPS = {
    "empty": loop_empty,
    "slice": loop_slice,
    "send": loop_send,
    "slice_send": loop_slice_send,
    "memoryview_send": loop_memoryview_send,
    "reserve": loop_reserve,
    "pack_send": loop_pack_send,
    "read_send": loop_read_send,
    "reserve_readinto": loop_reserve_readinto,
    "reserve_pack_into": loop_reserve_pack_into,
    "nats": loop_nats,
    "jetstream": loop_jetstream,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--sizes", default="64,1024,65536")
    ap.add_argument("--ringside-bin")
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "/usr/sbin/nats-server")
    ap.add_argument("--no-nats", action="store_true", help="skip nats (when nats-server is missing)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the raw figures here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ringside-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        rs_port = free_port()
        sock = str(tmp / "ringside.sock")
        rs_bin = find_ringside(args.ringside_bin)
        procs.append(
            subprocess.Popen(
                [rs_bin, "serve", "--socket", sock, "--listen", f"127.0.0.1:{rs_port}",
                 "--ring-size", "64MiB", "--max-payload", "64KiB"],
                stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "wb"),
            )
        )
        wait_tcp(rs_port, procs[-1], "ringside serve")
        producer = ringside.Producer(sock)
        if not producer.wait_connected(10):
            raise SystemExit(f"producer did not connect: {producer.last_error}")

        ops = [op for op in OPERATIONS if not (args.no_nats and op[0] in ("nats", "jetstream"))]
        loop = asyncio.new_event_loop()
        ctx: dict = {"producer": producer, "loop": loop}
        if not args.no_nats:
            import nats

            nats_port = free_port()
            procs.append(
                subprocess.Popen(
                    [args.nats_server, "-js", "-a", "127.0.0.1", "-p", str(nats_port),
                     "-sd", str(tmp / "jetstream")],
                    stdout=subprocess.DEVNULL, stderr=open(tmp / "nats.log", "wb"),
                )
            )
            wait_tcp(nats_port, procs[-1], "nats-server")

            async def connect():
                nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
                js = nc.jetstream()
                await js.add_stream(name="BENCH", subjects=["js.bench"])
                return nc, js

            ctx["nats"], ctx["js"] = loop.run_until_complete(connect())

        results: dict = {}
        for size in sizes:
            ctx["payload"] = os.urandom(size)
            ctx["data"] = os.urandom(size * 2)
            ctx["struct"] = struct.Struct(f"<{size // 8}q")
            ctx["values"] = tuple(range(size // 8))
            ctx["stream"] = io.BytesIO(os.urandom(size))
            samples = {key: [] for key, _, _ in ops}
            for key, _, div in ops:  # warm-up
                LOOPS[key](max(1, args.iterations // (10 * div)), size, ctx)
            for _ in range(args.repeats):
                for key, _, div in ops:
                    n = max(1, args.iterations // div)
                    samples[key].append(LOOPS[key](n, size, ctx) / n)
            results[size] = samples

        stats = producer.stats()
        assert stats.dropped_not_connected == 0 and stats.dropped_too_large == 0, stats
        print_table(results, ops, args, stats)
        if args.json:
            args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
        producer.close()
        if "nats" in ctx:
            loop.run_until_complete(ctx["nats"].close())
        loop.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_table(results, ops, args, stats) -> None:
    sizes = list(results)
    med = {s: {k: statistics.median(v) for k, v in results[s].items()} for s in sizes}
    print(f"python {platform.python_version()}, ringside {ringside.__version__}, "
          f"{args.iterations} iterations x {args.repeats} repeats (jetstream: /100), "
          f"median ns per operation [min..max]\n")
    head = "| operation | " + " | ".join(f"{s} B" for s in sizes) + " |"
    print(head)
    print("|" + "---|" * (len(sizes) + 1))
    for key, label, _ in ops:
        cells = []
        for s in sizes:
            v = results[s][key]
            cells.append(f"{med[s][key]:.0f} [{min(v):.0f}..{max(v):.0f}]")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for s in sizes:
        m = med[s]
        line = (f"{s} B: send / slicing = {m['send'] / m['slice']:.2f}x, "
                f"send minus empty loop = {m['send'] - m['empty']:.0f} ns, "
                f"reserve / send = {m['reserve'] / m['send']:.2f}x, "
                f"reserve+pack_into / send(pack()) = {m['reserve_pack_into'] / m['pack_send']:.2f}x, "
                f"reserve+readinto / send(read()) = {m['reserve_readinto'] / m['read_send']:.2f}x")
        if "nats" in m:
            line += (f", nats publish / send = {m['nats'] / m['send']:.2f}x, "
                     f"jetstream publish / send = {m['jetstream'] / m['send']:.0f}x")
        print(line)
    print(f"\nproducer stats after the run: {stats}")


if __name__ == "__main__":
    sys.exit(main())
