"""Instructions per operation (valgrind callgrind), for the loops of bench_send.py: a
count that, unlike the wall-clock figures, does not move with the load of a shared machine.

    python/.venv/bin/python python/bench/instructions.py [--n 20000] [--sizes 64,1024]

For each operation and size, runs the loop under `valgrind --tool=callgrind` twice, with 0
and with N iterations (after the same warm-up), and reports (total(N) - total(0)) / N:
the instructions of one iteration, the Python interpreter's included. Counts the Python
process only (the sidecar runs outside valgrind). nats is not measured here: most of its
cost is in another process and in system calls.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
OPS = [
    "empty", "slice", "send", "slice_send", "memoryview_send", "reserve",
    "pack_send", "reserve_pack_into", "read_send", "reserve_readinto",
]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_send", HERE / "bench_send.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(socket_path: str, op: str, size: int, n: int) -> None:
    import io
    import struct

    import ringside

    bench = load_bench()
    producer = ringside.Producer(socket_path)
    assert producer.wait_connected(10), producer.last_error
    ctx = {
        "producer": producer,
        "payload": os.urandom(size),
        "data": os.urandom(size * 2),
        "struct": struct.Struct(f"<{size // 8}q"),
        "values": tuple(range(size // 8)),
        "stream": io.BytesIO(os.urandom(size)),
    }
    loop = bench.LOOPS[op]
    loop(200, size, ctx)  # warm-up: same in both runs
    if n:
        loop(n, size, ctx)
    producer.close()


def collected(python: str, socket_path: str, op: str, size: int, n: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         python, __file__, "--child", socket_path, op, str(size), str(n)],
        capture_output=True, text=True, check=True,
    )
    m = re.search(r"Collected : (\d+)", out.stderr)
    if not m:
        raise SystemExit(f"no callgrind total for {op} {size} {n}:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--sizes", default="64,1024")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--ringside-bin")
    args = ap.parse_args()
    bench = load_bench()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ringside-instr-"))
    sock = str(tmp / "ringside.sock")
    port = bench.free_port()
    serve = subprocess.Popen(
        [bench.find_ringside(args.ringside_bin), "serve", "--socket", sock,
         "--listen", f"127.0.0.1:{port}", "--ring-size", "64MiB", "--max-payload", "64KiB"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        bench.wait_tcp(port, serve, "ringside serve")
        sizes = [int(s) for s in args.sizes.split(",")]
        ops = args.ops.split(",")
        print(f"instructions per operation (callgrind, N={args.n}, Python interpreter included)\n")
        print("| operation | " + " | ".join(f"{s} B" for s in sizes) + " |")
        print("|" + "---|" * (len(sizes) + 1))
        for op in ops:
            cells = []
            for size in sizes:
                base = collected(sys.executable, sock, op, size, 0)
                full = collected(sys.executable, sock, op, size, args.n)
                cells.append(f"{(full - base) / args.n:.0f}")
            print(f"| {op} | " + " | ".join(cells) + " |", flush=True)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
