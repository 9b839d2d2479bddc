"""The gRPC stubs shipped in ringside/v1/ are what proto/ringside/v1/ringside.proto
generates today (regenerate with `python python/tools/gen_stubs.py`)."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

PYTHON_DIR = pathlib.Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_stubs", PYTHON_DIR / "tools" / "gen_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_stubs_are_not_stale(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (python/requirements-dev.txt) generates the stubs")
    gen = load_generator()
    for fresh in gen.generate(tmp_path):
        shipped = PYTHON_DIR / "ringside" / "v1" / fresh.name
        assert shipped.read_bytes() == fresh.read_bytes(), (
            f"{shipped} is stale: run `python python/tools/gen_stubs.py` and commit the result"
        )


def test_the_installed_package_ships_the_stubs():
    import ringside
    import ringside.v1.ringside_pb2 as pb
    import ringside.v1.ringside_pb2_grpc as pb_grpc

    assert pb.DESCRIPTOR.package == "ringside.v1"
    assert hasattr(pb_grpc, "RingsideStub")
    if os.environ.get("RINGSIDE_TEST_INSTALLED_WHEEL"):
        # run-tests.sh: what is tested is the pip-installed wheel.
        for module in (ringside, pb, ringside._native):
            assert "site-packages" in module.__file__, module.__file__
