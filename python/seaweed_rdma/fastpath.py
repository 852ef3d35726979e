"""The fast path as the Python side sees it: which sidecar serves a volume, and batches of
extents handed to the Rust engine (GIL released) with per-extent results. Whatever the
engine reports as not delivered goes back to the caller for HTTP."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._core import Engine, parse_fid
from .addresses import split_host_port
from .filer import Chunk
from .master import MasterClient
from .stats import Stats
from .volume_http import mint_read_jwt

log = logging.getLogger("seaweed_rdma.fastpath")

NEEDLE_COMPRESSED = 0x01
OP_BYTES = 1 << 20


def sidecar_for(spec: str | dict[str, str], volume_url: str) -> str | None:
    """The sidecar address for a volume server, per the ``sidecar=`` spec:
    ``":PORT"`` (on the volume server's host), ``"HOST:PORT"`` (one for all), or a mapping
    from volume-server address (``host:port`` or URL) to sidecar address."""
    host = urlsplit(volume_url).hostname or "127.0.0.1"
    if isinstance(spec, dict):
        netloc = urlsplit(volume_url).netloc
        return spec.get(volume_url) or spec.get(netloc) or spec.get(f"http://{netloc}")
    if spec.startswith(":"):
        _, port = split_host_port("127.0.0.1" + spec)
        return f"{host}:{port}"
    h, port = split_host_port(spec)
    return f"{h}:{port}"


@dataclass
class RangeRequest:
    """A plain extent to read into ``buf[buf_offset:buf_offset+length]``."""

    chunk: Chunk
    in_chunk: int
    length: int
    buf_offset: int


class FastPath:
    """Reads over the sidecars through the Rust engine."""

    def __init__(self, spec: str | dict[str, str], transport: str, master: MasterClient,
                 stats: Stats, jwt_key: str | None = None, timeout: float = 5.0,
                 max_inflight: int = 128, connect_timeout: float = 1.0,
                 verbs_slot_size: int = 1 << 20) -> None:
        self.spec = spec
        self.requested = transport
        self._targets: dict[str, str] = {}  # volume server URL -> sidecar address
        self._master = master
        self._stats = stats
        self._jwt_key = jwt_key
        # auto: verbs where this host and the sidecar both can, else tcp (decided per
        # sidecar at connect time by the engine); verbs: RDMA or HTTP, never tcp.
        self.engine = Engine(timeout_ms=int(timeout * 1000),
                             connect_timeout_ms=max(1, int(connect_timeout * 1000)),
                             verbs_slot_size=verbs_slot_size,
                             max_inflight=max_inflight, transport=transport)

    @property
    def transport(self) -> str:
        """The transport the sidecars are being read over: "verbs" when any connection
        uses RDMA, else "tcp"."""
        used = {str(h.get("transport")) for h in self.engine.health()}
        return "verbs" if "verbs" in used else "tcp"

    def _target(self, chunk: Chunk) -> str | None:
        try:
            locations = self._master.lookup(chunk.volume_id)
        except Exception as e:  # the HTTP path will report it properly
            log.debug("no location for %s: %s", chunk.file_id, e)
            return None
        if not locations:
            return None
        target = self._targets.get(locations[0])
        if target is None:
            target = sidecar_for(self.spec, locations[0])
            if target is not None:
                self._targets[locations[0]] = target
        return target

    def _jwt(self, file_id: str) -> str:
        return mint_read_jwt(self._jwt_key, file_id) if self._jwt_key else ""

    def _ops(self, reqs: list[RangeRequest]
             ) -> tuple[list[tuple[str, int, int, int, int, int, int, str]], list[RangeRequest],
                        list[RangeRequest]]:
        """Engine ops for the requests that have a sidecar; those that have none."""
        ops = []
        todo: list[RangeRequest] = []
        undelivered: list[RangeRequest] = []
        for r in reqs:
            target = self._target(r.chunk)
            if target is None:
                self._stats.fallback("no sidecar")
                undelivered.append(r)
                continue
            vid, key, cookie = parse_fid(r.chunk.file_id)
            jwt = self._jwt(r.chunk.file_id)
            # Pieces of at most OP_BYTES: the engine keeps them all in flight at once, so
            # one large extent is read in parallel rather than as one long transfer.
            for at in range(0, r.length, OP_BYTES):
                n = min(OP_BYTES, r.length - at)
                piece = r if n == r.length else RangeRequest(r.chunk, r.in_chunk + at, n,
                                                             r.buf_offset + at)
                ops.append((target, vid, key, cookie, piece.in_chunk, n, piece.buf_offset, jwt))
                todo.append(piece)
        return ops, todo, undelivered

    def _account(self, todo: list[RangeRequest], results: list[str | None], elapsed: float,
                 undelivered: list[RangeRequest]) -> list[RangeRequest]:
        for r, reason in zip(todo, results, strict=True):
            if reason is None:
                self._stats.record("fast", r.length, elapsed)
            else:
                self._stats.fallback(reason)
                log.info("fast path did not deliver %s [%d+%d]: %s; reading over HTTP",
                         r.chunk.file_id, r.in_chunk, r.length, reason)
                undelivered.append(r)
        return undelivered

    def read_ranges(self, buf: memoryview, reqs: list[RangeRequest]) -> list[RangeRequest]:
        """Reads ``reqs`` into ``buf``; returns the ones not delivered."""
        ops, todo, undelivered = self._ops(reqs)
        if not ops:
            return undelivered
        t0 = time.perf_counter()
        results = self.engine.read_into(buf, ops)
        return self._account(todo, results, time.perf_counter() - t0, undelivered)

    async def read_ranges_async(self, buf: memoryview, reqs: list[RangeRequest]
                                ) -> list[RangeRequest]:
        """As ``read_ranges``, for trio: the engine runs the batch on its own threads and
        signals an eventfd, which trio waits on, so no Python thread is involved."""
        import trio

        ops, todo, undelivered = self._ops(reqs)
        if not ops:
            return undelivered
        t0 = time.perf_counter()
        ticket = self.engine.submit_read_into(buf, ops)
        await trio.lowlevel.wait_readable(ticket.fileno())
        return self._account(todo, ticket.results(), time.perf_counter() - t0, undelivered)

    def read_whole(self, chunk: Chunk) -> tuple[bytes, str | None] | None:
        """A needle's stored data over the fast path, CRC-checked, with the encoding to
        decode it with; None when the fast path cannot deliver it."""
        target = self._target(chunk)
        if target is None:
            self._stats.fallback("no sidecar")
            return None
        vid, key, cookie = parse_fid(chunk.file_id)
        t0 = time.perf_counter()
        result = self.engine.read_whole([(target, vid, key, cookie, self._jwt(chunk.file_id))])[0]
        if isinstance(result, str):
            self._stats.fallback(result)
            log.info("fast path did not deliver %s whole: %s; reading over HTTP",
                     chunk.file_id, result)
            return None
        data, crc, flags = result
        from ._core import needle_crc_matches

        if not needle_crc_matches(data, crc):
            self._stats.fallback("crc mismatch")
            log.warning("CRC mismatch on %s from sidecar %s; reading over HTTP",
                        chunk.file_id, target)
            return None
        self._stats.record("fast", len(data), time.perf_counter() - t0)
        return data, ("gzip" if flags & NEEDLE_COMPRESSED else None)

    def health(self) -> list[dict[str, object]]:
        """Per-sidecar health as the engine sees it."""
        return list(self.engine.health())
