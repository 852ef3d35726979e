"""Entries (and their planned views) a client reuses for ``meta_ttl`` seconds."""

from __future__ import annotations

import threading
import time

from .filer import Entry
from .reader import FileView


class EntryCache:
    """Filer entries by path, each kept ``ttl`` seconds with the view planned from it."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._items: dict[str, tuple[float, Entry, FileView | None]] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> tuple[Entry, FileView | None] | None:
        """The entry at ``path`` and its view (if planned), while fresh."""
        with self._lock:
            hit = self._items.get(path)
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1], hit[2]

    def put(self, entry: Entry) -> None:
        """``entry``, just read from the filer."""
        with self._lock:
            self._items[entry.path] = (time.monotonic() + self._ttl, entry, None)

    def attach(self, entry: Entry, view: FileView) -> None:
        """Keeps ``view`` with ``entry`` if that is still the version held."""
        with self._lock:
            hit = self._items.get(entry.path)
            if hit and hit[1] is entry:
                self._items[entry.path] = (hit[0], entry, view)

    def remember(self, entry: Entry) -> None:
        """``entry``, learnt elsewhere (a listing); a view of the same version is kept
        rather than planned again."""
        expiry = time.monotonic() + self._ttl
        with self._lock:
            hit = self._items.get(entry.path)
            if hit and hit[2] is not None and hit[1].mtime_ns == entry.mtime_ns \
                    and hit[1].chunks == entry.chunks:
                self._items[entry.path] = (expiry, hit[1], hit[2])
            else:
                self._items[entry.path] = (expiry, entry, None)

    def drop(self, path: str | None) -> None:
        """Forgets ``path`` (``None``: everything)."""
        with self._lock:
            if path is None:
                self._items.clear()
            else:
                self._items.pop(path, None)
