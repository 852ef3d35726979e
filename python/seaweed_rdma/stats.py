"""Counters and latency percentiles per read path, safe to update from many threads."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from typing import Any

PATHS = ("fast", "http")


class Stats:
    """Bytes, reads and latencies per path (``fast``, ``http``), plus fallbacks and errors."""

    def __init__(self, samples: int = 8192) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = defaultdict(int)
        self._reads: dict[str, int] = defaultdict(int)
        self._lat: dict[str, deque[float]] = {p: deque(maxlen=samples) for p in PATHS}
        self._counters: dict[str, int] = defaultdict(int)
        self._reasons: dict[str, int] = defaultdict(int)
        self._last_fallback: dict[str, str] | None = None

    def record(self, path: str, nbytes: int, seconds: float | None = None) -> None:
        """One read (an extent or a whole chunk) served by ``path``."""
        with self._lock:
            self._bytes[path] += nbytes
            self._reads[path] += 1
            if seconds is not None:
                self._lat[path].append(seconds)

    def count(self, name: str, n: int = 1) -> None:
        """Bumps a named counter (``fallbacks``, ``errors``, ``file_reads``...)."""
        with self._lock:
            self._counters[name] += n

    def fallback(self, reason: str, n: int = 1, message: str = "") -> None:
        """Extents that left the fast path for HTTP, and why (``message``: the engine's
        words for the last one, kept for errors and ``stats()``)."""
        with self._lock:
            self._counters["fallbacks"] += n
            self._reasons[reason] += n
            self._last_fallback = {"reason": reason, "message": message or reason}

    def last_fallback(self) -> str:
        """The last fallback as ``reason: message``, or "" when there was none."""
        with self._lock:
            last = self._last_fallback
        return "" if last is None else f"{last['reason']}: {last['message']}"

    def snapshot(self) -> dict[str, Any]:
        """A plain dict for ``Client.stats()``."""
        with self._lock:
            out: dict[str, Any] = {}
            for p in PATHS:
                lat = sorted(self._lat[p])
                out[p] = {
                    "bytes": self._bytes[p],
                    "reads": self._reads[p],
                    "latency_us": _percentiles(lat),
                }
            out["fallbacks"] = self._counters.get("fallbacks", 0)
            out["fallback_reasons"] = dict(self._reasons)
            out["last_fallback"] = dict(self._last_fallback) if self._last_fallback else None
            out["errors"] = self._counters.get("errors", 0)
            for k, v in self._counters.items():
                if k not in out:
                    out[k] = v
            return out


def _percentiles(sorted_seconds: list[float]) -> dict[str, float]:
    if not sorted_seconds:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    n = len(sorted_seconds)

    def pick(q: float) -> float:
        return round(sorted_seconds[min(n - 1, int(q * n))] * 1e6, 1)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "max": round(sorted_seconds[-1] * 1e6, 1)}
