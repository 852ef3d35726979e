"""The filer's gRPC address from each form a user may give the filer in."""

from __future__ import annotations

import pytest

from seaweed_rdma.discovery import filer_grpc_address


@pytest.mark.parametrize(("given", "grpc"), [
    ("127.0.0.1:8888", "127.0.0.1:18888"),
    ("127.0.0.1:8888.19999", "127.0.0.1:19999"),
    ("filer.local:8888", "filer.local:18888"),
    ("http://127.0.0.1:8888", "127.0.0.1:18888"),  # a URL carries no gRPC port: the default
    ("http://filer.local:8888/", "filer.local:18888"),
])
def test_grpc_address(given: str, grpc: str) -> None:
    assert filer_grpc_address(given) == grpc


@pytest.mark.parametrize("given", ["127.0.0.1", "http://127.0.0.1", "host:port"])
def test_no_port_is_a_clear_error(given: str) -> None:
    with pytest.raises(ValueError, match="port"):
        filer_grpc_address(given)
