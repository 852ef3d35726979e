"""Clusters with read JWT: the client mints tokens from the shared key, for HTTP and for the
sidecar; without the key reads are refused with a clear error."""

from __future__ import annotations

import random

import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster
from seaweed_rdma.errors import Unauthorized

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KEY = "test-read-signing-key-0123456789"
SECURITY = f"""
[jwt.signing.read]
key = "{KEY}"
expires_after_seconds = 60
"""


@pytest.fixture(scope="module")
def jwt_cluster():  # type: ignore[no-untyped-def]
    with LocalCluster(volumes=1, security_toml=SECURITY) as c:
        c.add_sidecar(c.volume_servers[0], extra=[f"--jwt-key={KEY}"])
        yield c


def test_http_reads_need_the_key(jwt_cluster):  # type: ignore[no-untyped-def]
    data = random.Random(4).randbytes(2_500_000)
    jwt_cluster.upload("/jwt/f.bin", data, max_mb=1)
    with Client(jwt_cluster.filer.grpc_address, jwt_key=KEY) as c:
        assert c.read("/jwt/f.bin") == data
    with Client(jwt_cluster.filer.grpc_address) as c, \
            pytest.raises(Unauthorized, match="JWT"):
        c.read("/jwt/f.bin", 0, 100)


def test_fast_path_with_the_key(jwt_cluster):  # type: ignore[no-untyped-def]
    data = random.Random(5).randbytes(1_200_000)
    jwt_cluster.upload("/jwt/g.bin", data, max_mb=1)
    with Client(jwt_cluster.filer.grpc_address, sidecar=jwt_cluster.sidecar_map(),
                transport="tcp", jwt_key=KEY) as c:
        assert c.read("/jwt/g.bin") == data
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] == len(data)


def test_sidecar_refuses_reads_without_a_token(jwt_cluster):  # type: ignore[no-untyped-def]
    data = random.Random(6).randbytes(10_000)
    jwt_cluster.upload("/jwt/h.bin", data)
    with Client(jwt_cluster.filer.grpc_address, sidecar=jwt_cluster.sidecar_map(),
                transport="tcp") as c:
        with pytest.raises(Unauthorized):
            c.read("/jwt/h.bin")
        assert c.stats()["fallback_reasons"].get("unauthorized", 0) >= 1


def test_sidecar_on_each_volume_host_by_port(jwt_cluster):  # type: ignore[no-untyped-def]
    """``sidecar=":PORT"``: the sidecar at PORT on each volume server's host."""
    data = random.Random(7).randbytes(300_000)
    jwt_cluster.upload("/jwt/port.bin", data)
    port = jwt_cluster.sidecars[0].port
    with Client(jwt_cluster.filer.grpc_address, sidecar=f":{port}", transport="auto",
                jwt_key=KEY) as c:
        assert c.read("/jwt/port.bin") == data
        st = c.stats()
        assert st["fast"]["bytes"] == len(data) and st["http"]["bytes"] == 0
    with Client(jwt_cluster.filer.grpc_address, sidecar=f"127.0.0.1:{port}", jwt_key=KEY) as c:
        assert c.read("/jwt/port.bin") == data
        assert c.stats()["http"]["bytes"] == 0
