"""The fast path as the Python side sees it: which sidecars serve a volume (one per replica,
the reader's own host first), and batches of extents handed to the Rust engine (GIL
released) with per-extent results. An extent one replica's sidecar could not deliver is
tried on the next replica's; what none delivered goes back to the caller for HTTP."""

from __future__ import annotations

import functools
import logging
import socket
import time
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit

from ._core import Engine, Needle, OpFailure, PolledRead, RangeOp, WholeOp, parse_fid
from .addresses import split_host_port
from .filer import Chunk
from .master import MasterClient
from .stats import Stats
from .volume_http import mint_read_jwt

log = logging.getLogger("seaweed_rdma.fastpath")

NEEDLE_COMPRESSED = 0x01
OP_BYTES = 1 << 20
# A 1 MiB chunk stored encrypted (a 12-byte nonce and a 16-byte tag more) is read whole, so
# the default slot leaves a page of room past OP_BYTES.
VERBS_SLOT_SIZE = OP_BYTES + 4096


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        return _join(host, port)
    h, port = split_host_port(spec)
    return _join(h, port)


@functools.cache
def local_hosts() -> frozenset[str]:
    """Names and addresses of this host, to tell which replicas are local."""
    names = {"localhost", "127.0.0.1", "::1"}
    try:
        hostname = socket.gethostname()
        names.add(hostname)
        names.update(str(info[4][0]) for info in socket.getaddrinfo(hostname, None))
    except OSError:  # an unresolvable hostname only means fewer replicas count as local
        pass
    return frozenset(names)


def by_locality(volume_urls: list[str], local: frozenset[str] | None = None) -> list[str]:
    """``volume_urls`` with the ones on this host first (order kept otherwise)."""
    local = local_hosts() if local is None else local
    return sorted(volume_urls, key=lambda u: (urlsplit(u).hostname or "") not in local)


def sidecars_for(spec: str | dict[str, str], volume_urls: list[str],
                 local: frozenset[str] | None = None) -> list[str]:
    """The distinct sidecars for a volume's replicas, this host's first."""
    out: list[str] = []
    for url in by_locality(volume_urls, local):
        target = sidecar_for(spec, url)
        if target is not None and target not in out:
            out.append(target)
    return out


@dataclass
class RangeRequest:
    """A plain extent to read into ``buf[buf_offset:buf_offset+length]``."""

    chunk: Chunk
    in_chunk: int
    length: int
    buf_offset: int


@dataclass
class _Attempt:
    """The engine ops of one round, and the request and candidates behind each."""

    ops: list[RangeOp]
    reqs: list[RangeRequest]
    candidates: list[list[str]]


async def _drive(polled: PolledRead) -> list[OpFailure | None]:
    """A polled batch's outcomes: ``poll()`` each time its socket turns readable, until
    they are in or its deadline passes (``poll()`` then fails what is unanswered)."""
    import trio

    while (results := polled.poll()) is None:
        with trio.move_on_after(polled.remaining()):
            await trio.lowlevel.wait_readable(polled.fileno())
    return results


class FastPath:
    """Reads over the sidecars through the Rust engine."""

    def __init__(self, spec: str | dict[str, str], transport: str, master: MasterClient,
                 stats: Stats, jwt_key: str | None = None, timeout: float = 5.0,
                 max_inflight: int = 128, connect_timeout: float = 1.0,
                 verbs_slot_size: int = VERBS_SLOT_SIZE, verbs_slots: int = 16,
                 busy_poll_us: int = 50, pinned_budget: int = 64 << 20,
                 idle_timeout: float = 60.0, max_conns: int = 128) -> None:
        self.spec = spec
        self.requested = transport
        self._master = master
        self._stats = stats
        self._jwt_key = jwt_key
        # A ranged piece must fit one verbs receive slot.
        self._op_bytes = OP_BYTES if transport == "tcp" else max(1, min(OP_BYTES,
                                                                        verbs_slot_size))
        # The master's location list for a volume -> its sidecars in the order to try:
        # computed once per distinct list, as this sits on every read's path.
        self._order: dict[tuple[str, ...], list[str]] = {}
        # auto: verbs where this host and the sidecar both can, else tcp (decided per
        # sidecar at connect time by the engine); verbs: RDMA or HTTP, never tcp.
        self.engine = Engine(timeout_ms=int(timeout * 1000),
                             connect_timeout_ms=max(1, int(connect_timeout * 1000)),
                             verbs_slot_size=verbs_slot_size, verbs_slots=verbs_slots,
                             max_inflight=max_inflight, busy_poll_us=busy_poll_us,
                             pinned_budget=pinned_budget,
                             idle_timeout_ms=int(idle_timeout * 1000), max_conns=max_conns,
                             transport=cast(Literal["auto", "tcp", "verbs"], transport))

    @property
    def op_bytes(self) -> int:
        """The longest single engine op this fast path sends."""
        return self._op_bytes

    def close(self) -> None:
        """Closes the engine's connections and stops its threads."""
        self.engine.close()

    @property
    def transport(self) -> str:
        """The transport the sidecars are being read over: "verbs" when any connection
        uses RDMA, else "tcp"."""
        used = {str(h.get("transport")) for h in self.engine.health()}
        return "verbs" if "verbs" in used else "tcp"

    def targets(self, chunk: Chunk) -> list[str]:
        """Sidecars that can serve ``chunk``, in the order to try them."""
        try:
            locations = self._master.lookup(chunk.volume_id)
        except Exception as e:  # the HTTP path will report it properly
            log.debug("no location for %s: %s", chunk.file_id, e)
            return []
        key = tuple(locations)
        order = self._order.get(key)
        if order is None:
            order = self._order[key] = sidecars_for(self.spec, locations)
        return order

    def _jwt(self, file_id: str) -> str:
        return mint_read_jwt(self._jwt_key, file_id) if self._jwt_key else ""

    def _first_round(self, reqs: list[RangeRequest]
                     ) -> tuple[list[tuple[RangeRequest, list[str]]], list[RangeRequest]]:
        """Each request, cut into pieces the engine keeps in flight at once (at most
        ``OP_BYTES``, and no larger than a verbs slot), with its sidecars; and the requests
        that have none."""
        todo: list[tuple[RangeRequest, list[str]]] = []
        none: list[RangeRequest] = []
        if len(reqs) > 1:
            self._master.prefetch({r.chunk.volume_id for r in reqs})
        for r in reqs:
            candidates = self.targets(r.chunk)
            if not candidates:
                self._stats.fallback("no_sidecar", message=f"no sidecar for {r.chunk.file_id}")
                none.append(r)
                continue
            for at in range(0, r.length, self._op_bytes):
                n = min(self._op_bytes, r.length - at)
                piece = r if n == r.length else RangeRequest(r.chunk, r.in_chunk + at, n,
                                                             r.buf_offset + at)
                todo.append((piece, candidates))
        return todo, none

    def _attempt(self, todo: list[tuple[RangeRequest, list[str]]]) -> _Attempt:
        att = _Attempt([], [], [])
        for r, candidates in todo:
            vid, key, cookie = parse_fid(r.chunk.file_id)
            att.ops.append(RangeOp(candidates[0], vid, key, cookie, r.in_chunk, r.length,
                                   r.buf_offset, self._jwt(r.chunk.file_id)))
            att.reqs.append(r)
            att.candidates.append(candidates)
        return att

    def _settle(self, att: _Attempt, results: list[OpFailure | None], elapsed: float,
                undelivered: list[RangeRequest]) -> list[tuple[RangeRequest, list[str]]]:
        """Records one round; returns what the next replica's sidecar should try, and adds
        to ``undelivered`` what no sidecar is left for."""
        retry: list[tuple[RangeRequest, list[str]]] = []
        for r, candidates, why in zip(att.reqs, att.candidates, results):
            if why is None:
                self._stats.record("fast", r.length, elapsed)
            elif len(candidates) > 1 and why.reason not in ("compressed", "bad_op"):
                self._stats.count("replica_retries")
                log.info("sidecar %s did not deliver %s [%d+%d]: %s; trying %s",
                         candidates[0], r.chunk.file_id, r.in_chunk, r.length, why.message,
                         candidates[1])
                retry.append((r, candidates[1:]))
            else:
                self._stats.fallback(why.reason, message=why.message)
                log.info("fast path did not deliver %s [%d+%d]: %s; reading over HTTP",
                         r.chunk.file_id, r.in_chunk, r.length, why.message)
                undelivered.append(r)
        return retry

    def read_ranges(self, buf: memoryview, reqs: list[RangeRequest]) -> list[RangeRequest]:
        """Reads ``reqs`` into ``buf``; returns the ones not delivered."""
        todo, undelivered = self._first_round(reqs)
        while todo:
            att = self._attempt(todo)
            t0 = time.perf_counter()
            results = self.engine.read_into(buf, att.ops)
            todo = self._settle(att, results, time.perf_counter() - t0, undelivered)
        return undelivered

    async def read_ranges_async(self, buf: memoryview, reqs: list[RangeRequest]
                                ) -> list[RangeRequest]:
        """As ``read_ranges``, for trio: the engine runs the batch on its own threads and
        signals an eventfd, which trio waits on, so no Python thread is involved.

        If the task is cancelled, the batch still owns ``buf`` until its deadline: the
        caller must not reuse that memory for anything else (drop it instead).
        """
        import trio

        todo, undelivered = self._first_round(reqs)
        while todo:
            att = self._attempt(todo)
            t0 = time.perf_counter()
            # A small batch goes out from this thread and its answer is read here once the
            # socket is readable: no engine thread, one wake-up. Others are submitted.
            polled = self.engine.start_polled(buf, att.ops)
            if polled is not None:
                results = await _drive(polled)
            else:
                ticket = self.engine.submit_read_into(buf, att.ops)
                await trio.lowlevel.wait_readable(ticket.fileno())
                results = ticket.results()
            todo = self._settle(att, results, time.perf_counter() - t0, undelivered)
        return undelivered

    def read_whole(self, chunk: Chunk) -> tuple[bytes, str | None] | None:
        """A needle's stored data over the fast path, CRC-checked, with the encoding to
        decode it with; None when no replica's sidecar delivered it intact."""
        candidates = self.targets(chunk)
        if not candidates:
            self._stats.fallback("no_sidecar", message=f"no sidecar for {chunk.file_id}")
            return None
        vid, key, cookie = parse_fid(chunk.file_id)
        reason, message = "no_sidecar", ""
        for target in candidates:
            t0 = time.perf_counter()
            op = WholeOp(target, vid, key, cookie, self._jwt(chunk.file_id))
            result: Needle | OpFailure = self.engine.read_whole([op])[0]
            if isinstance(result, OpFailure):
                reason, message = result.reason, result.message
                log.info("sidecar %s did not deliver %s whole: %s", target, chunk.file_id,
                         result.message)
                continue
            if not result.verify():
                reason, message = "crc_mismatch", f"CRC mismatch from sidecar {target}"
                log.warning("CRC mismatch on %s from sidecar %s", chunk.file_id, target)
                self._stats.count("crc_mismatches")
                if target != candidates[-1]:
                    self._stats.count("replica_retries")
                continue
            self._stats.record("fast", len(result.data), time.perf_counter() - t0)
            return result.data, ("gzip" if result.flags & NEEDLE_COMPRESSED else None)
        self._stats.fallback(reason, message=message)
        log.info("fast path did not deliver %s whole (%s); reading over HTTP", chunk.file_id,
                 reason)
        return None

    def health(self) -> list[dict[str, object]]:
        """Per-sidecar health as the engine sees it."""
        return list(self.engine.health())
