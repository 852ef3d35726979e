"""Master client: volume id -> volume-server locations, cached until a read through them fails."""

from __future__ import annotations

import threading
import time

import httpx

from .addresses import http_base
from .errors import NoLiveLocation, ServerError, Unreachable


class MasterClient:
    """Looks up volume locations on a SeaweedFS master (``/dir/lookup``).

    Lookups are cached for ``ttl`` seconds; ``invalidate(vid)`` drops one entry, which the
    volume reader does when every cached location of that volume failed.
    """

    def __init__(self, address: str, http: httpx.Client, ttl: float = 60.0,
                 retry_deadline: float = 10.0) -> None:
        self.address = address
        self.base = http_base(address)
        self._http = http
        self._ttl = ttl
        self._retry_deadline = retry_deadline
        self._cache: dict[int, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def lookup(self, volume_id: int) -> list[str]:
        """Volume-server base URLs (``http://host:port``) that hold ``volume_id``.

        Raises ``NoLiveLocation`` when the master knows no live location, ``Unreachable``
        (naming the master) when it cannot be reached.
        """
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(volume_id)
            if hit and hit[0] > now:
                return hit[1]
        urls = self._fetch(volume_id)
        with self._lock:
            self._cache[volume_id] = (now + self._ttl, urls)
        return urls

    def invalidate(self, volume_id: int) -> None:
        """Forgets the cached locations of one volume."""
        with self._lock:
            self._cache.pop(volume_id, None)

    def _fetch(self, volume_id: int) -> list[str]:
        deadline = time.monotonic() + self._retry_deadline
        while True:
            try:
                r = self._http.get(f"{self.base}/dir/lookup", params={"volumeId": str(volume_id)})
            except httpx.HTTPError as e:
                raise Unreachable(f"master {self.address} unreachable: {e!r}") from e
            # A master that is still warming up answers 503 with Retry-After.
            if r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(min(float(r.headers.get("Retry-After", "0.5") or 0.5), 1.0))
                continue
            break
        if r.status_code == 404:
            raise NoLiveLocation(f"volume {volume_id}: master {self.address} knows no location")
        if r.status_code >= 300:
            raise ServerError(f"master {self.address} lookup of volume {volume_id}: "
                              f"HTTP {r.status_code} {r.text[:200]}")
        body = r.json()
        if body.get("error"):
            raise NoLiveLocation(f"volume {volume_id}: {body['error']}")
        urls = [http_base(loc["url"]) for loc in body.get("locations") or []]
        if not urls:
            raise NoLiveLocation(f"volume {volume_id} has no live location")
        return urls
