"""One unary gRPC call over cleartext HTTP/2, without the grpc library.

A ``Client`` made without ``master=`` asks the filer for its masters before its first
read. Importing grpc for that one call costs 15-50 ms of a fresh process's first call (a
notebook's first ``pd.read_parquet("seaweedfs://...")``), several times the call itself.
This sends the request in the few frames a unary call needs and reads the reply's message.
Anything it does not expect (TLS, an error status, a server that is not gRPC, a message
split oddly) gives ``None``, and the caller makes the call with grpc instead, which also
words the errors.

Frames and header encoding follow RFC 9113 (HTTP/2) and RFC 7541 (HPACK): headers are sent
as literals (static-table names where there is one), and the reply's headers are not
decoded: a reply that carries a message is the answer; one without is left to grpc.
"""

from __future__ import annotations

import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
STREAM = 1
MAX_REPLY = 1 << 20


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + \
        struct.pack(">I", stream) + payload


def _int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541, 5.1) whose first byte carries ``first``'s high bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes((first | value,))
    out = bytearray((first | top,))
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode("ascii")
    return _int(len(raw), 7, 0) + raw


def request_headers(authority: str, path: str) -> bytes:
    """The HPACK block of a gRPC request: every field a literal, never indexed."""
    return b"".join([
        b"\x83",  # :method POST (static 3)
        b"\x86",  # :scheme http (static 6)
        _int(4, 4, 0) + _string(path),  # :path (static name 4)
        _int(1, 4, 0) + _string(authority),  # :authority (static name 1)
        _int(31, 4, 0) + _string("application/grpc"),  # content-type (static name 31)
        b"\x00" + _string("te") + _string("trailers"),
    ])


def _read(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            raise ConnectionError("closed mid-frame")
        out += got
    return bytes(out)


def unary(target: str, method: str, request: bytes, timeout: float) -> bytes | None:
    """The reply message of a unary call of ``method`` (``/pkg.Service/Method``) at
    ``target`` (``host:port``), or ``None`` where this cannot tell (see the module)."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            body = b"\x00" + struct.pack(">I", len(request)) + request
            sock.sendall(PREFACE + _frame(SETTINGS, 0, 0)
                         + _frame(HEADERS, END_HEADERS, STREAM, request_headers(target, method))
                         + _frame(DATA, END_STREAM, STREAM, body))
            return _reply(sock)
    except (OSError, ValueError):
        return None


def _reply(sock: socket.socket) -> bytes | None:
    data = bytearray()
    while True:
        head = _read(sock, 9)
        size = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if size > MAX_REPLY or len(data) > MAX_REPLY:
            return None
        payload = _read(sock, size)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            sock.sendall(_frame(PING, ACK, 0, payload))
        elif kind in (GOAWAY, RST_STREAM) and stream in (0, STREAM):
            return None
        elif kind == DATA and stream == STREAM:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            data += payload
        if stream == STREAM and kind in (DATA, HEADERS) and flags & END_STREAM:
            break
    # One length-prefixed, uncompressed message, or nothing usable.
    if len(data) < 5 or data[0] != 0:
        return None
    length = int.from_bytes(data[1:5], "big")
    return bytes(data[5:]) if length == len(data) - 5 else None
