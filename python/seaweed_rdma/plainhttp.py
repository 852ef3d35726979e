"""An httpx transport for plain ``http://`` over the standard library's ``http.client``.

httpx's own transport is built on httpcore, and importing httpcore imports trio when trio
is installed (it is, with the ``mount`` extra): about 100 ms on the 2-core test machine,
paid inside a process's first ``Client`` call (a notebook's first
``pd.read_parquet("seaweedfs://...")``), which is longer than the read itself. This
transport needs nothing beyond ``http.client`` (already imported by most programs) and
keeps connections alive per host as httpcore does; ``https://`` still goes to httpx's
transport (``client.LazyTLS``). Callers keep using ``httpx.Client`` and its exceptions.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import httpx

# An idle connection older than this is closed rather than reused (httpcore's default).
KEEPALIVE_EXPIRY_S = 5.0
PIECE = 256 << 10
# socket.timeout is TimeoutError from 3.10 on, an OSError apart from it on 3.9.
_TIMEOUTS = (socket.timeout, TimeoutError)


def _alive(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection can carry a request: the peer has not closed
    it (a closed socket reads as ready, with b"" or stray bytes)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        # Non-blocking: with a timeout set, recv would first wait that long to be readable.
        sock.setblocking(False)
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class _Pool:
    """Idle connections per ``(host, port)``, most recently used first, at most ``keep``
    per host; a connection is owned by one request at a time."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._idle: dict[tuple[str, int], list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, key: tuple[str, int]) -> http.client.HTTPConnection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                since, conn = idle.pop()
            if now - since < KEEPALIVE_EXPIRY_S and _alive(conn):
                return conn
            conn.close()

    def give(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < self._keep:
                idle.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                conn.close()


class _Body(httpx.SyncByteStream):
    """A response body read from its connection; the connection goes back to the pool
    when the body was read to its end, and is closed when it was not."""

    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 pool: _Pool, key: tuple[str, int], request: httpx.Request) -> None:
        self._response = response
        self._conn: http.client.HTTPConnection | None = conn
        self._pool = pool
        self._key = key
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                # read, not read1: only read marks the response done at its last byte,
                # which is what lets the connection go back to the pool.
                piece = self._response.read(PIECE)
            except _TIMEOUTS as e:
                raise httpx.ReadTimeout(str(e) or "read timed out",
                                        request=self._request) from e
            except http.client.IncompleteRead as e:
                raise httpx.RemoteProtocolError(f"body ended early: {e!r}",
                                                request=self._request) from e
            except (OSError, http.client.HTTPException) as e:
                raise httpx.ReadError(repr(e), request=self._request) from e
            if not piece:
                self._release()
                return
            yield piece

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._response.isclosed() and not self._response.will_close:
            self._pool.give(self._key, conn)
        else:
            conn.close()

    def close(self) -> None:
        if self._conn is not None and not self._response.isclosed():
            # Unread body bytes would be taken for the next answer: drop the connection.
            self._response.close()
            conn, self._conn = self._conn, None
            conn.close()
        self._release()


class PlainHttpTransport(httpx.BaseTransport):
    """``http://`` requests over ``http.client``, connections kept alive per host (at
    most ``keep`` idle ones each). Timeouts come from the request (httpx's ``connect``
    and ``read``); failures raise httpx's exceptions, as its own transport does."""

    def __init__(self, keep: int = 32) -> None:
        self._pool = _Pool(keep)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"plain http only, not {url.scheme!r}",
                                            request=request)
        key = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        conn = self._pool.take(key)
        if conn is None:
            conn = self._connect(key, timeouts.get("connect"), request)
        try:
            assert conn.sock is not None
            conn.sock.settimeout(timeouts.get("read"))
            response = self._exchange(conn, request)
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            response.status, headers=response.getheaders(),
            stream=_Body(response, conn, self._pool, key, request),
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1")})

    @staticmethod
    def _connect(key: tuple[str, int], timeout: float | None, request: httpx.Request
                 ) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(key[0], key[1], timeout=timeout)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except _TIMEOUTS as e:
            conn.close()
            raise httpx.ConnectTimeout(str(e) or "connect timed out", request=request) from e
        except OSError as e:
            conn.close()
            raise httpx.ConnectError(repr(e), request=request) from e
        return conn

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, request: httpx.Request
                  ) -> http.client.HTTPResponse:
        url = request.url
        target = url.raw_path.decode("ascii")
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        try:
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name.decode("latin-1"), value)
            conn.endheaders()
            stream = request.stream
            assert isinstance(stream, httpx.SyncByteStream)
            for piece in stream:
                if chunked and piece:
                    conn.send(b"%x\r\n%b\r\n" % (len(piece), piece))
                elif piece:
                    conn.send(piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
        except _TIMEOUTS as e:
            raise httpx.WriteTimeout(str(e) or "write timed out", request=request) from e
        except OSError as e:
            raise httpx.WriteError(repr(e), request=request) from e
        try:
            return conn.getresponse()
        except _TIMEOUTS as e:
            raise httpx.ReadTimeout(str(e) or "read timed out", request=request) from e
        except http.client.RemoteDisconnected as e:
            raise httpx.RemoteProtocolError(repr(e), request=request) from e
        except (OSError, http.client.HTTPException) as e:
            raise httpx.ReadError(repr(e), request=request) from e

    def close(self) -> None:
        self._pool.close()
