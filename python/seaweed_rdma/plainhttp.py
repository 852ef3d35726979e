"""An httpx transport for plain ``http://`` over urllib3's connection pools.

httpx's own transport is built on httpcore, and importing httpcore imports trio when trio
is installed (it is, with the ``mount`` extra): about 100 ms on the 2-core test machine,
paid inside a process's first ``Client`` call (a notebook's first
``pd.read_parquet("seaweedfs://...")``), which is longer than the read itself. urllib3
imports neither, and keeps connections alive per host (``httppool``), checking on reuse
that the peer has not closed them; ``https://`` still goes to httpx's transport
(``client.LazyTLS``). Callers keep using ``httpx.Client`` and its exceptions: urllib3's
are mapped onto them here, and nothing is retried (callers decide what to retry).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from http.client import IncompleteRead as HttpIncompleteRead
from http.client import RemoteDisconnected

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from .httppool import HostPools

PIECE = 256 << 10


def _as_httpx(e: HTTPError, request: httpx.Request) -> httpx.TransportError:
    """httpx's exception for urllib3's ``e``, as httpx's own transport would raise."""
    if isinstance(e, NewConnectionError):  # refused, unreachable, unknown name
        return httpx.ConnectError(str(e), request=request)
    if isinstance(e, ConnectTimeoutError):
        return httpx.ConnectTimeout(str(e) or "connect timed out", request=request)
    if isinstance(e, ReadTimeoutError):
        return httpx.ReadTimeout(str(e) or "read timed out", request=request)
    if isinstance(e, ProtocolError):
        # urllib3 wraps what the socket or http.client raised as its second argument.
        cause = e.args[1] if len(e.args) > 1 else None
        if isinstance(cause, (RemoteDisconnected, HttpIncompleteRead)):
            return httpx.RemoteProtocolError(str(e), request=request)
        return httpx.ReadError(str(e), request=request)
    return httpx.TransportError(str(e), request=request)


class _Body(httpx.SyncByteStream):
    """A response body read from its connection: urllib3 puts the connection back in its
    pool once the body was read to its end, and closes it when it was not."""

    def __init__(self, response: urllib3.BaseHTTPResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                piece = self._response.read(PIECE, decode_content=False)
                if not piece:
                    return
                yield piece
        except HTTPError as e:
            raise _as_httpx(e, self._request) from e

    def close(self) -> None:
        # Unread body bytes would be taken for the next answer: urllib3 drops the
        # connection of a response closed early, and keeps one read to its end.
        if not self._response.closed:
            self._response.close()
        self._response.release_conn()


class PlainHttpTransport(httpx.BaseTransport):
    """``http://`` requests over urllib3, connections kept alive per host (at most ``keep``
    idle ones each). Timeouts come from the request (httpx's ``connect`` and ``read``;
    sending is bounded by ``connect``, as urllib3 does); failures raise httpx's
    exceptions, as its own transport does."""

    def __init__(self, keep: int = 32) -> None:
        self._pools = HostPools(keep, retries=False, timeout=urllib3.Timeout(None))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"plain http only, not {url.scheme!r}",
                                            request=request)
        timeouts = request.extensions.get("timeout", {})
        headers = urllib3.HTTPHeaderDict()
        for name, value in request.headers.raw:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        body: bytes | Iterable[bytes] | None
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            body = request.content or None
        else:
            # Streamed: httpx has set Transfer-Encoding: chunked, which urllib3 follows.
            assert isinstance(stream, httpx.SyncByteStream)
            body = stream
        try:
            response = self._pools.pool(url.host, url.port).urlopen(
                request.method, url.raw_path.decode("ascii"), body=body, headers=headers,
                retries=False, redirect=False, assert_same_host=False,
                timeout=urllib3.Timeout(connect=timeouts.get("connect"),
                                        read=timeouts.get("read")),
                preload_content=False, decode_content=False)
        except HTTPError as e:
            raise _as_httpx(e, request) from e
        return httpx.Response(
            response.status, headers=list(response.headers.items()),
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": response.reason.encode("latin-1")
                        if response.reason else b""})

    def close(self) -> None:
        self._pools.close()
