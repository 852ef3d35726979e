"""urllib3 connection pools, one per ``host:port``, kept alive between requests: shared by
the client's plain ``http://`` transport (``plainhttp``) and the mount's chunk uploads
(``mount.keepalive``), which differ only in their retry and timeout defaults."""

from __future__ import annotations

import threading

import urllib3


class HostPools:
    """A ``urllib3.HTTPConnectionPool`` per ``(host, port)``, at most ``per_host``
    connections kept idle in each (more are opened when busy, never waited for).
    Thread-safe: urllib3 hands each connection to one request at a time."""

    def __init__(self, per_host: int, retries: urllib3.Retry | bool,
                 timeout: urllib3.Timeout) -> None:
        self._per_host = max(1, per_host)
        self._retries = retries
        self._timeout = timeout
        self._pools: dict[tuple[str, int | None], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    @property
    def connects(self) -> int:
        """Connections opened so far (all hosts)."""
        with self._lock:
            return sum(p.num_connections for p in self._pools.values())

    def pool(self, host: str, port: int | None) -> urllib3.HTTPConnectionPool:
        """The pool of ``host:port`` (``None``: port 80), made on first use."""
        key = (host, port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = urllib3.HTTPConnectionPool(
                    host, port, maxsize=self._per_host, block=False,
                    retries=self._retries, timeout=self._timeout)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        """Closes every idle connection (those in use close when their request ends)."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for p in pools.values():
            p.close()
