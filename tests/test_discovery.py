"""Finding the master through a real filer: the plain HTTP/2 call (``h2c``, on the ``h2``
library) gives what the filer's gRPC gives, anything else falls back to grpc, and a fresh
process's Client reads without importing grpc."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile

import grpc
import pytest

from seaweed_rdma._core import decode_filer_masters
from seaweed_rdma.discovery import discover_master, filer_grpc_address
from seaweed_rdma.errors import Unreachable
from seaweed_rdma.h2c import unary

pytestmark = pytest.mark.cluster

METHOD = "/filer_pb.SeaweedFiler/GetFilerConfiguration"


def test_plain_call_answers_as_grpc(cluster):  # type: ignore[no-untyped-def]
    target = filer_grpc_address(cluster.filer.grpc_address)
    plain = unary(target, METHOD, b"", 5.0)
    with grpc.insecure_channel(target) as channel:
        reply = channel.unary_unary(METHOD, request_serializer=None,
                                    response_deserializer=None)(b"", timeout=5.0)
    assert plain == reply
    assert discover_master(cluster.filer.grpc_address) == decode_filer_masters(reply)[0]


def test_what_it_cannot_read_is_none(cluster):  # type: ignore[no-untyped-def]
    target = filer_grpc_address(cluster.filer.grpc_address)
    assert unary(target, "/filer_pb.SeaweedFiler/NoSuchMethod", b"", 5.0) is None
    http_port = cluster.filer.url.rsplit("//", 1)[1]
    assert unary(http_port, METHOD, b"", 5.0) is None  # HTTP/1.1, not gRPC
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
        assert unary(closed, METHOD, b"", 1.0) is None
        with pytest.raises(Unreachable, match="GetFilerConfiguration"):
            discover_master(f"127.0.0.1:1.{s.getsockname()[1]}", timeout=1.0)


def test_first_read_without_grpc(cluster, shapes, sidecars):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    code = (
        "import sys\nfrom seaweed_rdma import Client\n"
        f"c = Client({cluster.filer.grpc_address!r}, sidecar={sidecars!r}, transport='tcp')\n"
        f"ok = c.read({s.path!r}) == open(sys.argv[1], 'rb').read()\n"
        "print(ok, c.stats()['fast']['bytes'] > 0, 'grpc' in sys.modules)\n"
        "c.close()\n")
    with tempfile.NamedTemporaryFile() as f:
        f.write(s.data)
        f.flush()
        out = subprocess.run([sys.executable, "-c", code, f.name], capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False"]
