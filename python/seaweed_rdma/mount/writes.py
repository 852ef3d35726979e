"""Writes through the mount, the way ``weed mount`` makes them.

Each file being written has one ``FileWriter``, shared by all of its handles. Written
bytes land in *pages*, one per ``-chunkSizeLimitMB`` slice of the file, each holding the
byte ranges written into it. A page that is written full (or pushed out because too many
pages are dirty) is *sealed*: its ranges are uploaded, each as one needle (a volume
assigned through the filer's ``AssignVolume``, then an HTTP POST to that volume server),
up to ``-concurrentWriters`` uploads at once for the whole mount. Every sealed page gets a
``modified_ts_ns`` later than the previous one, so where an upload overlaps older chunks
the newer bytes win, as the filer's readers resolve overlaps.

Nothing reaches the filer's entry until a commit (``flush``, ``fsync``, ``release``, and
before metadata changes): it waits for every upload of the file and then writes the
entry with its new chunk list in one ``UpdateEntry``/``CreateEntry``. So other clients see
either the previous version or the new one, never a half-written file. If an upload fails
on three assignments in a row the file's writer keeps the error: later writes and the
commit return EIO (logged with the reason), and the entry keeps its last committed
version, so no entry ever names a chunk that was not written.

Reads of a file with a writer see its bytes as written: the committed and uploaded chunks
read through the shared read path, with sealed-but-uploading pages and dirty pages laid
over them in the order they were written.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from ..errors import SeaweedRdmaError
from ..filer_grpc import Assignment, FilerGrpc, FilerRpcError, entry_from_pb, split_path
from ..reader import FileView, ReadPath

log = logging.getLogger("seaweed_rdma.mount")

UPLOAD_ATTEMPTS = 3  # each on a new assignment, as weed mount retries
ASSIGNMENT_FRESH_S = 10.0  # an assignment made ahead is used only this soon
MAX_DIRTY_PAGES = 16  # per file; beyond it the least recently written page is uploaded

class WriteFailed(SeaweedRdmaError):
    """Bytes that could not be stored (upload failed on every assignment); EIO."""

    errno = errno.EIO
    reason = "write_failed"


@dataclass(frozen=True)
class WriteOptions:
    """The ``weed mount`` write flags."""

    chunk_size: int = 2 << 20
    concurrent_writers: int = 128
    collection: str = ""
    replication: str = ""
    ttl_sec: int = 0
    disk_type: str = ""
    data_center: str = ""


class Uploader:
    """Assigns a file id through the filer and POSTs one needle to the volume server,
    trying a new assignment when a volume server fails. Blocking: run it off the loop."""

    def __init__(self, grpc: FilerGrpc, opts: WriteOptions) -> None:
        self.grpc = grpc
        self.opts = opts
        n = max(4, opts.concurrent_writers)
        self.http = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0),
                                 limits=httpx.Limits(max_connections=n,
                                                     max_keepalive_connections=n))
        self.uploads = 0
        self.bytes = 0
        self.retries = 0
        self.failures = 0

    def close(self) -> None:
        """Closes the HTTP connections."""
        self.http.close()

    def assign(self, path: str) -> Assignment:
        """One assignment for a chunk of ``path``, with the mount's placement flags."""
        return self.grpc.assign(path=path, collection=self.opts.collection,
                                replication=self.opts.replication, ttl_sec=self.opts.ttl_sec,
                                disk_type=self.opts.disk_type,
                                data_center=self.opts.data_center)

    def upload(self, path: str, data: bytes, first: Assignment | None = None
               ) -> tuple[str, str]:
        """Stores ``data`` as one needle; returns ``(file_id, e_tag)``, the e_tag being the
        base64 MD5 of the bytes as the filer records it. ``first`` is an assignment made
        ahead for the first attempt. Raises ``WriteFailed``."""
        etag = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        reasons: list[str] = []
        for attempt in range(UPLOAD_ATTEMPTS):
            if attempt:
                self.retries += 1
                time.sleep(0.2 * attempt)
            try:
                a = first if (first is not None and attempt == 0) else self.assign(path)
            except FilerRpcError as e:
                reasons.append(f"assign: {e}")
                continue
            headers = {"Authorization": f"BEARER {a.auth}"} if a.auth else {}
            try:
                r = self.http.post(f"http://{a.url}/{a.file_id}", headers=headers,
                                   files={"file": ("", data, "application/octet-stream")})
            except httpx.HTTPError as e:
                reasons.append(f"POST {a.url}/{a.file_id}: {e!r}")
                continue
            if r.status_code >= 300:
                reasons.append(f"POST {a.url}/{a.file_id}: HTTP {r.status_code} {r.text[:200]}")
                continue
            self.uploads += 1
            self.bytes += len(data)
            return a.file_id, etag
        self.failures += 1
        raise WriteFailed(f"{path}: upload of {len(data)} bytes failed on "
                          f"{UPLOAD_ATTEMPTS} assignments: {'; '.join(reasons)}")


@dataclass
class Page:
    """Dirty bytes of one chunk-sized slice of a file: ``buf`` from the slice's start,
    valid where ``ranges`` (sorted, disjoint ``[start, end)``) say."""

    index: int
    buf: bytearray = field(default_factory=bytearray)
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def put(self, at: int, data: memoryview) -> None:
        if at > len(self.buf):
            self.buf.extend(bytes(at - len(self.buf)))
        self.buf[at:at + len(data)] = data
        self.ranges = _merge(self.ranges, at, at + len(data))

    def clip(self, end: int) -> None:
        """Forgets everything at or past ``end`` (relative to the page)."""
        self.ranges = [(s, min(e, end)) for s, e in self.ranges if s < end]
        del self.buf[max(end, 0):]

    def covered(self) -> int:
        return sum(e - s for s, e in self.ranges)


def _merge(ranges: list[tuple[int, int]], s: int, e: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if b < s or a > e:
            out.append((a, b))
        else:
            s, e = min(a, s), max(b, e)
    out.append((s, e))
    out.sort()
    return out


@dataclass
class Sealed:
    """A page being uploaded; its bytes stay readable until its chunks are in the entry."""

    page: Page
    ts_ns: int
    done: trio.Event = field(default_factory=trio.Event)
    chunks: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class FileWriter:
    """The write state of one file (see the module docs). All methods run on the trio
    thread; blocking work goes through ``off_loop``."""

    def __init__(self, path: str, entry: Any, mount: WriteMount, created: bool = True) -> None:
        self.path = path
        # False for a file created here whose entry is not on the filer yet: the first
        # commit writes it with CreateEntry (one call for create+write+close of a small
        # file), or the first upload does, so a large file shows while it is written.
        self.created = created
        self.entry = entry  # the protobuf entry: committed chunks plus uploaded ones
        self.size = _pb_size(entry)
        self.mount = mount
        self.handles = 0
        self.pages: OrderedDict[int, Page] = OrderedDict()
        self.sealed: list[Sealed] = []
        self.data_dirty = False  # bytes changed since the last commit (mtime moves)
        self.meta_dirty = not created  # the entry differs from the filer's
        self.unlinked = False
        self.error: BaseException | None = None
        self.lock = trio.Lock()
        self._view: FileView | None = None
        self._view_key: tuple[int, int] | None = None
        self._chunks_version = 0  # bumped whenever entry.chunks changes
        # One assignment asked for at the first write, so the first upload (often the only
        # one: a small file) does not wait for AssignVolume at close.
        self._ahead: Assignment | None = None
        self._ahead_at = 0.0
        self._ahead_done: trio.Event | None = None
        if entry.content and not entry.chunks:
            # Inline content becomes dirty bytes: once chunks exist readers ignore it.
            content = bytes(entry.content)
            entry.content = b""
            self._put(0, memoryview(content))

    # -- writes --------------------------------------------------------------------------

    def _put(self, offset: int, data: memoryview) -> None:
        cs = self.mount.opts.chunk_size
        pos = 0
        while pos < len(data):
            at = offset + pos
            index, inner = divmod(at, cs)
            n = min(len(data) - pos, cs - inner)
            page = self.pages.get(index)
            if page is None:
                page = self.pages[index] = Page(index)
            else:
                self.pages.move_to_end(index)
            page.put(inner, data[pos:pos + n])
            pos += n
        self.size = max(self.size, offset + len(data))
        self.data_dirty = self.meta_dirty = True

    async def write(self, offset: int, data: bytes) -> int:
        """Buffers ``data`` at ``offset``; uploads pages that are full."""
        if self.error is not None:
            raise WriteFailed(f"{self.path}: an earlier upload failed: {self.error}")
        self._put(offset, memoryview(data))
        self.assign_ahead()
        cs = self.mount.opts.chunk_size
        full = [i for i, p in self.pages.items() if p.ranges == [(0, cs)]]
        while len(self.pages) - len(full) > MAX_DIRTY_PAGES:
            oldest = next(i for i in self.pages if i not in full)
            full.append(oldest)
        if full:
            await self._ensure_created()  # a file larger than a chunk shows while written
        for index in full:
            await self._seal(index)
        return len(data)

    async def _ensure_created(self) -> None:
        """Writes the entry, empty, if the filer has none yet."""
        if self.created or self.unlinked:
            return
        from ..filer_grpc import PB

        empty = PB["Entry"]()
        empty.CopyFrom(self.entry)
        del empty.chunks[:]
        empty.attributes.file_size = 0
        await self.mount.off_loop(self.mount.grpc.create, split_path(self.path)[0], empty)
        self.created = True

    async def _seal(self, index: int) -> None:
        page = self.pages.pop(index, None)
        if page is None or not page.ranges:
            return
        s = Sealed(page, self.mount.next_ts())
        self.sealed.append(s)
        await self.mount.upload_slots.acquire()  # back-pressure: bounded uploads in flight
        assert self.mount.nursery is not None
        self.mount.nursery.start_soon(self._upload, s)

    def assign_ahead(self) -> None:
        """Asks for the first chunk's assignment now, in the background (once): called at
        the first write, and at create, since a new file is about to be written."""
        if self._ahead_done is None and self.mount.nursery is not None:
            self._ahead_done = trio.Event()
            self.mount.nursery.start_soon(self._assign_ahead, self._ahead_done)

    async def _assign_ahead(self, done: trio.Event) -> None:
        try:
            self._ahead = await self.mount.off_loop(self.mount.uploader.assign, self.path)
            self._ahead_at = time.monotonic()
        except Exception:  # the upload asks again, and reports what fails then
            self._ahead = None
        finally:
            done.set()

    async def _take_ahead(self) -> Assignment | None:
        if self._ahead_done is None:
            return None
        await self._ahead_done.wait()
        a, self._ahead = self._ahead, None
        if a is None or time.monotonic() - self._ahead_at > ASSIGNMENT_FRESH_S:
            return None
        return a

    async def _upload(self, s: Sealed) -> None:
        from ..filer_grpc import PB

        cs = self.mount.opts.chunk_size
        base = s.page.index * cs
        try:
            for start, end in s.page.ranges:
                data = bytes(s.page.buf[start:end])
                first = await self._take_ahead()
                fid, etag = await self.mount.off_loop(self.mount.uploader.upload, self.path,
                                                      data, first)
                s.chunks.append(PB["FileChunk"](file_id=fid, offset=base + start,
                                                size=end - start, modified_ts_ns=s.ts_ns,
                                                e_tag=etag))
        except BaseException as e:  # kept for the commit to report (EIO)
            s.error = e
            if self.error is None:
                self.error = e
                log.error("write of %s failed: %s", self.path, e)
            if not isinstance(e, Exception):
                raise
        finally:
            self.mount.upload_slots.release()
            s.done.set()
            self._settle()

    def _settle(self) -> None:
        """Moves finished uploads into the entry, oldest first, so a newer page never lies
        under an older one that is still being uploaded."""
        while self.sealed and self.sealed[0].done.is_set():
            s = self.sealed.pop(0)
            if s.error is None:
                # Chunks past a truncation made meanwhile are clipped like the others.
                for c in s.chunks:
                    if c.offset < self.size:
                        c.size = min(c.size, self.size - c.offset)
                        self.entry.chunks.append(c)
                self._chunks_version += 1
                self.meta_dirty = True

    async def drain(self) -> None:
        """Uploads every dirty page and waits for all uploads of this file."""
        for index in list(self.pages):
            await self._seal(index)
        while True:
            pending = [s for s in self.sealed if not s.done.is_set()]
            if not pending:
                break
            await pending[0].done.wait()
        self._settle()
        if self.error is not None:
            raise WriteFailed(f"{self.path}: {self.error}") from self.error

    async def commit(self) -> None:
        """Makes everything written so far durable and visible: uploads, then one entry
        update. Raises ``WriteFailed`` (EIO) if an upload failed."""
        async with self.lock:
            await self.drain()
            if not self.meta_dirty or self.unlinked:
                return
            a = self.entry.attributes
            if self.data_dirty:
                now = time.time_ns()
                a.mtime, a.mtime_ns = divmod(now, 1_000_000_000)
                a.ctime, a.ctime_ns = a.mtime, a.mtime_ns
            a.file_size = self.size
            directory, _ = split_path(self.path)
            if self.created:
                await self.mount.off_loop(self.mount.grpc.update, directory, self.entry)
            else:
                await self.mount.off_loop(self.mount.grpc.create, directory, self.entry)
                self.created = True
            self.data_dirty = self.meta_dirty = False
            self.mount.committed(self)

    async def truncate(self, size: int) -> None:
        """Sets the size: drops bytes past it (chunks are clipped, as weed mount does) or
        grows the file with a hole."""
        async with self.lock:
            await self.drain()
            if size < self.size:
                keep = []
                for c in self.entry.chunks:
                    if c.offset >= size:
                        continue
                    if c.offset + c.size > size:
                        c.size = size - c.offset
                    keep.append(c)
                del self.entry.chunks[:]
                self.entry.chunks.extend(keep)
                self._chunks_version += 1
            self.size = size
            self.data_dirty = self.meta_dirty = True

    # -- reads ---------------------------------------------------------------------------

    async def read(self, offset: int, size: int, reader: ReadPath) -> bytes:
        """Bytes as written, dirty ones included; short at the end of the file."""
        n = max(0, min(size, self.size - offset))
        if n == 0:
            return b""
        buf = bytearray(n)
        # The pages to lay over the chunks are taken before any await: an upload that
        # finishes meanwhile leaves the sealed list, while the chunk list read below may
        # still be the one without it. A page taken here keeps its bytes either way.
        layers = [s.page for s in self.sealed] + list(self.pages.values())
        if self.entry.chunks:
            view = await self._base_view(reader)
            await reader.readinto_async(view, memoryview(buf), offset, self.mount.off_loop)
        cs = self.mount.opts.chunk_size
        for page in layers:
            base = page.index * cs
            for s, e in page.ranges:
                lo, hi = max(base + s, offset), min(base + e, offset + n)
                if lo < hi:
                    buf[lo - offset:hi - offset] = page.buf[lo - base:hi - base]
        return bytes(buf)

    async def _base_view(self, reader: ReadPath) -> FileView:
        key = (self._chunks_version, self.size)
        if self._view is None or self._view_key != key:
            entry = entry_from_pb(self.entry, self.path)
            entry.size = self.size
            entry.content = None
            self._view = await self.mount.off_loop(reader.view, entry)
            self._view_key = key
        return self._view

    def attributes_entry(self) -> Any:
        """The read-side ``Entry`` for this file as written (size and times)."""
        e = entry_from_pb(self.entry, self.path)
        e.size = self.size
        e.content = None
        if self.data_dirty:
            e.mtime_ns = max(e.mtime_ns, self.mount.last_write_ns)
        return e


def _pb_size(entry: Any) -> int:
    end = max((c.offset + c.size for c in entry.chunks), default=0)
    if entry.content and not entry.chunks:
        return len(entry.content)
    return max(int(entry.attributes.file_size), end)


class WriteMount:
    """What the writers of one mount share: the filer's gRPC API, the uploader, the
    upload slots (``-concurrentWriters``) and the clock for ``modified_ts_ns``."""

    def __init__(self, grpc: FilerGrpc, opts: WriteOptions,
                 on_commit: Callable[[FileWriter], None]) -> None:
        self.grpc = grpc
        self.opts = opts
        self.uploader = Uploader(grpc, opts)
        self.upload_slots = trio.Semaphore(max(1, opts.concurrent_writers))
        self._limiter = trio.CapacityLimiter(max(1, opts.concurrent_writers) + 8)
        self._on_commit = on_commit
        self.nursery: trio.Nursery | None = None
        self._last_ts = 0
        self.last_write_ns = 0

    async def off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs a blocking call in a thread (uploads get their own thread limit)."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args),
                                             limiter=self._limiter)

    def next_ts(self) -> int:
        """A ``modified_ts_ns`` later than every one handed out before."""
        self._last_ts = max(time.time_ns(), self._last_ts + 1)
        self.last_write_ns = self._last_ts
        return self._last_ts

    def committed(self, w: FileWriter) -> None:
        self._on_commit(w)

    def close(self) -> None:
        """Closes the uploader's connections."""
        self.uploader.close()

    def stats(self) -> dict[str, int]:
        """Upload counters."""
        u = self.uploader
        return {"uploads": u.uploads, "upload_bytes": u.bytes, "upload_retries": u.retries,
                "upload_failures": u.failures}
