"""Keep-alive HTTP connections to volume servers for the mount's chunk uploads: the one
owner of those connections (``KeepAlivePool``).

A chunk upload is one POST with the bytes as its body. ``http.client`` on a kept-alive
connection costs about a third of the CPU time of ``httpx`` per POST (measured: 0.4 vs 1.2
ms for 64 KiB, and half the wall time), which is most of what a small file's close pays in
this process beside the network. Blocking: call it from worker threads; thread-safe (each
connection is used by one thread at a time).
"""

from __future__ import annotations

import http.client
import socket
import threading

CONNECT_TIMEOUT_S = 5.0
IO_TIMEOUT_S = 60.0
# A kept connection the server closed meanwhile fails at once on reuse; these errors on a
# reused connection are retried once on a new one (a POST of a file id writes the same
# needle again, so sending it twice is harmless).
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, BrokenPipeError,
          ConnectionResetError, ConnectionAbortedError)


class KeepAlivePool:
    """Idle connections per ``host:port``, at most ``per_host`` kept for each."""

    def __init__(self, per_host: int) -> None:
        self._per_host = max(1, per_host)
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.connects = 0

    def _take(self, hostport: str) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(hostport)
            return idle.pop() if idle else None

    def _give(self, hostport: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(hostport, [])
            if not self._closed and len(idle) < self._per_host:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, hostport: str) -> http.client.HTTPConnection:
        host, _, port = hostport.rpartition(":")
        conn = http.client.HTTPConnection(host or hostport, int(port) if host else None,
                                          timeout=CONNECT_TIMEOUT_S)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(IO_TIMEOUT_S)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        return conn

    def post(self, hostport: str, path: str, body: bytes, headers: dict[str, str]
             ) -> tuple[int, bytes]:
        """POSTs ``body`` to ``http://hostport/path``; returns (status, response body).
        Raises ``OSError`` or ``http.client.HTTPException`` when no answer came."""
        conn = self._take(hostport)
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(hostport)
            try:
                conn.request("POST", path, body=body, headers=headers)
                r = conn.getresponse()
                text = r.read()
            except _STALE:
                conn.close()
                if not reused:
                    raise
                conn, reused = None, False  # once more, on a new connection
                continue
            except BaseException:
                conn.close()
                raise
            if r.will_close:
                conn.close()
            else:
                self._give(hostport, conn)
            return r.status, text

    def close(self) -> None:
        """Closes every idle connection (those in use close when their POST ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()
