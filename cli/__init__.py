import gfs  # noqa: F401  (sets gRPC's environment before grpc loads: gfs/__init__.py)
