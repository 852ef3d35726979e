"""Finding the master through the filer, as ``weed mount`` does: the filer's gRPC
``GetFilerConfiguration`` lists the masters it uses."""

from __future__ import annotations

from urllib.parse import urlsplit

from ._core import decode_filer_masters
from .addresses import split_host_port
from .errors import Unreachable

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
    import grpc  # only needed when the master is not given

    target = filer_grpc_address(filer)
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
    masters = decode_filer_masters(reply)
    if not masters:
        raise Unreachable(f"filer {filer} reports no master")
    return masters[0]
