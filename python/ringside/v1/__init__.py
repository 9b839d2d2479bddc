"""Generated gRPC stubs of ringside's API (proto/ringside/v1/ringside.proto).

Regenerate with `python python/tools/gen_stubs.py`; tests/test_stubs.py fails when they
are stale. Importable as `ringside.v1.ringside_pb2` and `ringside.v1.ringside_pb2_grpc`.
"""
