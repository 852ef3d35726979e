"""Master client: volume id -> volume-server locations, cached until a read through them fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx

from .addresses import http_base
from .errors import NoLiveLocation, ServerError, Unreachable


class MasterClient:
    """Looks up volume locations on a SeaweedFS master (``/dir/lookup``).

    Lookups are cached for ``ttl`` seconds; ``invalidate(vid)`` drops one entry, which the
    volume reader does when every cached location of that volume failed. ``prefetch`` looks
    up several volumes at once.
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

    def known(self, volume_id: int) -> list[str] | None:
        """The locations of ``volume_id`` if held and fresh, else None; never asks."""
        with self._lock:
            hit = self._cache.get(volume_id)
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def lookup(self, volume_id: int) -> list[str]:
        """Volume-server base URLs (``http://host:port``) that hold ``volume_id``, sorted.

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

    def prefetch(self, volume_ids: Iterable[int]) -> int:
        """Learns, in one request, the locations of those of ``volume_ids`` not held, so
        that a read spread over many volumes waits for one master round trip rather than
        one per volume (a fresh process's first 64 MiB read, over 7 volumes, spent 20-40 ms
        on them in turn, most of it Python's cost per request). Returns how many it learnt.

        The request is the master's ``/dir/status``: every volume server with the ids of
        the volumes it holds. Every volume listed there is held for ``ttl`` (a later read's
        volumes are then known too). Nothing is taken from an answer in which a server's
        list is cut short (the master shows at most 100 ids per server), since a volume
        could then lack a replica; volumes it does not list (erasure-coded ones, a master
        that is not the leader) are left to ``lookup``. Failures are not raised: ``lookup``
        asks again where the volume is used, and reports them there."""
        now = time.monotonic()
        with self._lock:
            missing = {v for v in volume_ids
                       if (hit := self._cache.get(v)) is None or hit[0] <= now}
        if len(missing) < 2:
            return 0  # the caller's own lookup is as quick
        try:
            r = self._http.get(f"{self.base}/dir/status")
            known = volume_map(r.json()) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            known = None
        if not known:
            return 0
        with self._lock:
            for vid, urls in known.items():
                self._cache[vid] = (now + self._ttl, sorted(urls))
        return len(missing & known.keys())

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
        # The same order whichever request learnt them (``prefetch`` lists by server):
        # every reader then tries a volume's replicas in one order, as each would with
        # ``/dir/lookup`` alone.
        return sorted(urls)


def _ids(text: str) -> list[int] | None:
    """``"1-3 5 9-10"`` as ``[1, 2, 3, 5, 9, 10]``; None when cut short (``...``) or not
    in that form."""
    out: list[int] = []
    for token in text.replace(",", " ").split():
        lo, _, hi = token.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def volume_map(status: Any) -> dict[int, list[str]] | None:
    """Volume id -> the base URLs of the servers holding it, from a master's
    ``/dir/status`` answer (``Topology.DataCenters[].Racks[].DataNodes[]``, each with its
    ``Url`` and ``VolumeIds``); None when any server's list is cut short or unreadable."""
    out: dict[int, list[str]] = {}
    try:
        for dc in status["Topology"].get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for node in rack.get("DataNodes") or []:
                    ids = _ids(str(node.get("VolumeIds", "")))
                    url = node.get("Url")
                    if ids is None or not url:
                        return None
                    for vid in ids:
                        out.setdefault(vid, []).append(http_base(url))
    except (KeyError, TypeError, AttributeError):
        return None
    return out
