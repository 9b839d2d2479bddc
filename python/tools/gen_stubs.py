"""Regenerates the gRPC stubs shipped in ringside/v1/ from proto/ringside/v1/ringside.proto.

    python/.venv/bin/python python/tools/gen_stubs.py            # rewrite ringside/v1/
    python/.venv/bin/python python/tools/gen_stubs.py --out DIR  # write elsewhere (the staleness test)

Needs grpcio-tools at the version pinned in python/requirements-dev.txt: the generated code
names that version, so another one produces a (harmless but visible) diff.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent
PROTO_DIR = PYTHON_DIR.parent / "proto"
PROTO_FILE = "ringside/v1/ringside.proto"
GENERATED = ("ringside_pb2.py", "ringside_pb2.pyi", "ringside_pb2_grpc.py")


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    """Runs protoc (from grpcio-tools) into `out`; returns the generated files."""
    from grpc_tools import protoc  # dev dependency only

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return [out / "ringside" / "v1" / name for name in GENERATED]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=PYTHON_DIR,
                        help="root to write ringside/v1/*.py into (default: python/)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
