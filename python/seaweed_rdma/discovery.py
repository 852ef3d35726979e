"""Finding the master through the filer, as ``weed mount`` does: the filer's gRPC
``GetFilerConfiguration`` lists the masters it uses."""

from __future__ import annotations

from urllib.parse import urlsplit

from . import h2c
from ._core import decode_filer_masters
from .addresses import split_host_port
from .errors import SeaweedRdmaError, Unreachable

_METHOD = "/filer_pb.SeaweedFiler/GetFilerConfiguration"


def filer_grpc_address(filer: str) -> str:
    """``host:grpcPort`` of a filer given as ``host:port.grpcPort``, or as ``host:port`` or
    an ``http://host:port`` URL (then SeaweedFS's default, HTTP port + 10000)."""
    if "://" in filer:  # a URL (``http://host:port``): SeaweedFS's default gRPC port
        parts = urlsplit(filer)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"filer address {filer!r} needs a host and a port")
        return f"{parts.hostname}:{parts.port + 10000}"
    host, port = split_host_port(filer)
    tail = filer.rpartition(":")[2]
    grpc_port = int(tail.split(".", 1)[1]) if "." in tail else port + 10000
    return f"{host}:{grpc_port}"


def discover_master(filer: str, timeout: float = 10.0) -> str:
    """The first master address the filer reports. Raises ``Unreachable`` naming the filer."""
    target = filer_grpc_address(filer)
    masters = _masters_h2c(target, timeout)
    if masters is None:
        masters = _masters_grpc(filer, target, timeout)
    if not masters:
        raise Unreachable(f"filer {filer} reports no master")
    return masters[0]


def _masters_h2c(target: str, timeout: float) -> list[str] | None:
    """The masters, asked without importing grpc (see ``h2c``); None: ask with grpc."""
    reply = h2c.unary(target, _METHOD, b"", min(timeout, 5.0))
    if reply is None:
        return None
    try:
        return decode_filer_masters(reply)
    except (ValueError, SeaweedRdmaError):
        return None


def _masters_grpc(filer: str, target: str, timeout: float) -> list[str]:
    import grpc  # only when the plain call did not answer

    try:
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(_METHOD, request_serializer=None,
                                       response_deserializer=None)
            reply = call(b"", timeout=timeout)
    except grpc.RpcError as e:
        raise Unreachable(
            f"filer {filer}: gRPC at {target} did not answer GetFilerConfiguration "
            f"({e.code().name}); pass master= explicitly or give the filer as host:port.grpcPort"
        ) from e
    return decode_filer_masters(reply)
