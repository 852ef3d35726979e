"""One unary gRPC call over cleartext HTTP/2 with the ``h2`` protocol library, without the
grpc library.

A ``Client`` made without ``master=`` asks the filer for its masters before its first
read. Importing grpc and opening a channel for that one call costs 15-50 ms of a fresh
process's first call (a notebook's first ``pd.read_parquet("seaweedfs://...")``), several
times the call itself; ``h2`` (imported here, on the first call) costs less than half of
grpc's import. ``h2`` keeps the HTTP/2 state (frames, HPACK, flow control, settings and
pings); this module only opens the socket and moves bytes. Anything it does not expect
(TLS, a gRPC error status, a server that is not gRPC, a compressed message) gives
``None``, and the caller makes the call with grpc instead, which also words the errors.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from h2.connection import H2Connection

MAX_REPLY = 1 << 20


def unary(target: str, method: str, request: bytes, timeout: float) -> bytes | None:
    """The reply message of a unary call of ``method`` (``/pkg.Service/Method``) at
    ``target`` (``host:port``), or ``None`` where this cannot tell (see the module)."""
    import h2.config
    import h2.connection
    import h2.exceptions

    host, _, port = target.rpartition(":")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None))
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.initiate_connection()
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, [
                (":method", "POST"), (":scheme", "http"), (":path", method),
                (":authority", target), ("content-type", "application/grpc"),
                ("te", "trailers")])
            conn.send_data(stream, b"\x00" + struct.pack(">I", len(request)) + request,
                           end_stream=True)
            sock.sendall(conn.data_to_send())
            return _reply(sock, conn, stream)
    except (OSError, ValueError, h2.exceptions.H2Error):
        return None


def _reply(sock: socket.socket, conn: H2Connection, stream: int) -> bytes | None:
    import h2.events

    data = bytearray()
    status: bytes | None = None  # grpc-status, in the trailers (or a trailers-only reply)
    while True:
        got = sock.recv(65536)
        if not got:
            return None
        for event in conn.receive_data(got):
            if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                return None
            if getattr(event, "stream_id", stream) != stream:
                continue
            if isinstance(event, h2.events.DataReceived):
                data += event.data
                if len(data) > MAX_REPLY:
                    return None
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                status = dict(event.headers).get(b"grpc-status", status)
            elif isinstance(event, h2.events.StreamEnded):
                return _message(data) if status == b"0" else None
        # Settings and ping acknowledgements, window updates.
        sock.sendall(conn.data_to_send())


def _message(data: bytearray) -> bytes | None:
    """One length-prefixed, uncompressed message, or nothing usable."""
    if len(data) < 5 or data[0] != 0:
        return None
    length = int.from_bytes(data[1:5], "big")
    return bytes(data[5:]) if length == len(data) - 5 else None
