"""Writes through the mount, the way ``weed mount`` makes them: the one owner of a file's
written bytes and uploads is its ``FileWriter``.

Each file being written has one ``FileWriter``, shared by all of its handles. Written
bytes land in *pages*, one per ``-chunkSizeLimitMB`` slice of the file, each holding the
byte ranges written into it. A page that is written full (or pushed out because too many
pages are dirty) is *sealed*: its ranges are uploaded, each as one needle (a volume
assigned through the filer's ``AssignVolume``, then an HTTP POST to that volume server;
see ``uploads``),
up to ``-concurrentWriters`` uploads at once for the whole mount. Every sealed page gets a
``modified_ts_ns`` later than the previous one, so where an upload overlaps older chunks
the newer bytes win, as the filer's readers resolve overlaps.

Nothing reaches the filer's entry until a commit (``flush``, ``fsync``, ``release``, and
before metadata changes): it waits for every upload of the file and then writes the
entry with its new chunk list in one ``UpdateEntry``/``CreateEntry``. A small commit (a
small file's close, a database's fsync) does its uploads and that entry write in one
worker-thread call (``_commit_small``). So other clients see
either the previous version or the new one, never a half-written file. The entry written
is the filer's version this writer last saw with its own changes on top, sent under the
filer's condition that it still has that version (``entry_state``): another client's
newer version is never overwritten, and no entry names a chunk the filer deleted.

An upload that fails on three assignments in a row (or while the filer stays unreachable
past the retry deadline) keeps its page: that commit returns EIO (logged with the reason),
the entry keeps its last committed version, and the next commit sends the page again, so
a writer that got an error is not stuck with it once the servers are back. Writes fail
(EIO) only while more failed pages wait than ``MAX_DIRTY_PAGES``.

Reads of a file with a writer see its bytes as written: the committed and uploaded chunks
read through the shared read path, with sealed-but-uploading pages and dirty pages laid
over them in the order they were written.
"""

from __future__ import annotations

import errno
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import trio

from ..filer_grpc import PB, Assignment, Conflict, FilerRpcError, entry_from_pb, split_path
from ..reader import FileView, ReadPath
from .entry_state import EntryState
from .uploads import ASSIGNMENT_FRESH_S, SmallCommit, WriteFailed, WriteMount

log = logging.getLogger("seaweed_rdma.mount")

MAX_DIRTY_PAGES = 16  # per file; beyond it the least recently written page is uploaded
SAVE_ATTEMPTS = 5  # entry writes refused because another client changed the file meanwhile
RENAME_WAIT_S = 2.0  # how long a commit that finds no entry waits for a rename's event
# A commit this small (dirty ranges, bytes) and with nothing else pending is done in one
# worker-thread call (``FileWriter._commit_small``).
SMALL_COMMIT_PIECES = 4
SMALL_COMMIT_BYTES = 1 << 20
# Bytes of its own committed chunks a writer keeps to answer reads with (``_clean``).
CLEAN_KEEP_BYTES = 4 << 20


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


def _covers(spans: list[tuple[int, int]], lo: int, hi: int) -> bool:
    """Whether the ``[start, end)`` spans together cover all of ``[lo, hi)``."""
    for s, e in sorted(spans):
        if s > lo:
            return False
        lo = max(lo, e)
        if lo >= hi:
            return True
    return lo >= hi


@dataclass
class Sealed:
    """A page being uploaded; its bytes stay readable until its chunks are in the entry.
    ``gen`` is the writer's generation when it was sealed: a page from before another
    client's content superseded this writer's changes is not added to the entry."""

    page: Page
    ts_ns: int
    gen: int
    done: trio.Event = field(default_factory=trio.Event)
    chunks: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class FileWriter:
    """The write state of one file (see the module docs). All methods run on the trio
    thread; blocking work goes through ``off_loop``. The entry it builds on and its
    changes are kept by one ``EntryState``. Every field is private: the path it follows,
    its handles, whether it is on the filer and whether it was unlinked change only
    through the methods below."""

    def __init__(self, path: str, entry: Any, mount: WriteMount, created: bool = True) -> None:
        self._path = path
        # False for a file created here whose entry is not on the filer yet: the first
        # commit writes it with CreateEntry (one call for create+write+close of a small
        # file), or the first upload does, so a large file shows while it is written.
        self._created = created
        self._state = EntryState(entry)
        self._size = self._state.size
        self._mount = mount
        self._handles = 0
        self._pages: OrderedDict[int, Page] = OrderedDict()
        self._sealed: list[Sealed] = []
        self._retry: list[Sealed] = []  # uploads that failed: their pages, sent again
        self._gen = 0
        self._unlinked = False
        self._inline_taken = False  # the base's inline bytes were moved into pages
        self._last_error: BaseException | None = None
        self._lock = trio.Lock()
        self._view: FileView | None = None
        self._view_key: tuple[int, int] | None = None
        # One assignment asked for at the first write, so the first upload (often the only
        # one: a small file) does not wait for AssignVolume at close.
        self._ahead: Assignment | None = None
        self._ahead_at = 0.0
        self._ahead_done: trio.Event | None = None
        # The bytes of the last chunks this writer stored, as (file offset, bytes), oldest
        # first, at most CLEAN_KEEP_BYTES: a read they cover (a database reading back its
        # WAL at a checkpoint) needs no volume server. Only chunks still the newest bytes
        # at their offsets are kept: dropped when another version or a truncation or hole
        # could lie over them.
        self._clean: list[tuple[int, bytes]] = []
        self._clean_bytes = 0
        # Other clients' versions announced so far: one announced while a commit ran may
        # be newer than what that commit stored (see ``stored_entry``).
        self._announced = 0

    # -- identity and handles --------------------------------------------------------------

    @property
    def path(self) -> str:
        """The file's current path (it follows renames: ``moved_to``)."""
        return self._path

    @property
    def created(self) -> bool:
        """False while the file was created here and the filer has no entry for it yet."""
        return self._created

    @property
    def size(self) -> int:
        """The file's size as written here."""
        return self._size

    @property
    def unlinked(self) -> bool:
        """True once the file was removed (here or elsewhere): nothing is written."""
        return self._unlinked

    @property
    def handles(self) -> int:
        """Open write handles sharing this writer."""
        return self._handles

    def open_handle(self) -> None:
        """One more write handle uses this writer."""
        self._handles += 1

    def close_handle(self) -> int:
        """One write handle ended; returns how many are left."""
        self._handles = max(0, self._handles - 1)
        return self._handles

    def moved_to(self, path: str) -> None:
        """The file was renamed (by this mount or another client): commits go there."""
        self._path = path

    def unlink(self) -> None:
        """The file was removed: its handles write nowhere now."""
        self._unlinked = True

    def stored_entry(self) -> Any | None:
        """The entry as this writer's last commit stored it (a protobuf; do not modify),
        while nothing was written or changed here since and no other version was read or
        announced after it; None otherwise."""
        if not self._created or self._unlinked or self._pages or self._sealed \
                or self._retry or self._state.dirty or not self._state.base_is_ours:
            return None
        return self._state.view()

    def keep_open_unlinked(self) -> None:
        """The file was unlinked here while open: its handles keep reading and writing
        it (uploads go on; commits write no entry), until its last close."""
        self._unlinked = True

    # -- writes --------------------------------------------------------------------------

    def _take_inline(self) -> None:
        """Before the first change, the base's inline bytes become dirty bytes: once the
        entry has chunks, readers ignore its inline content."""
        if self._inline_taken:
            return
        self._inline_taken = True
        content = self._state.inline_content()
        if content:
            self._put(0, memoryview(content))

    def _put(self, offset: int, data: memoryview) -> None:
        cs = self._mount.opts.chunk_size
        pos = 0
        while pos < len(data):
            at = offset + pos
            index, inner = divmod(at, cs)
            n = min(len(data) - pos, cs - inner)
            page = self._pages.get(index)
            if page is None:
                page = self._pages[index] = Page(index)
            else:
                self._pages.move_to_end(index)
            page.put(inner, data[pos:pos + n])
            pos += n
        self._size = max(self._size, offset + len(data))

    async def write(self, offset: int, data: bytes) -> int:
        """Buffers ``data`` at ``offset``; uploads pages that are full. Fails (EIO) only
        while more failed uploads wait to be retried than a writer may keep in memory."""
        if len(self._retry) > MAX_DIRTY_PAGES:
            raise WriteFailed(f"{self.path}: {len(self._retry)} chunks wait for a retry of "
                              f"their upload: {self._last_error}")
        self._take_inline()
        self._put(offset, memoryview(data))
        self._state.bytes_written()  # an mtime set before these bytes no longer holds
        self.assign_ahead()
        cs = self._mount.opts.chunk_size
        full = [i for i, p in self._pages.items() if p.ranges == [(0, cs)]]
        while len(self._pages) - len(full) > MAX_DIRTY_PAGES:
            oldest = next(i for i in self._pages if i not in full)
            full.append(oldest)
        if full:
            await self._ensure_created()  # a file larger than a chunk shows while written
        for index in full:
            await self._seal(index)
        return len(data)

    async def _ensure_created(self) -> None:
        """Writes the entry, empty, if the filer has none yet (and follows the filer's
        version if another client made one meanwhile)."""
        if self._created or self.unlinked:
            return
        empty = self._state.to_send(time.time_ns())
        del empty.chunks[:]
        empty.attributes.file_size = 0
        try:
            await self._mount.off_loop(self._mount.grpc.create, split_path(self.path)[0],
                                      empty, False, True)
        except Conflict:
            await self._reread()
            return
        self._created = True

    async def _seal(self, index: int) -> None:
        page = self._pages.pop(index, None)
        if page is None or not page.ranges:
            return
        await self._start_upload(Sealed(page, self._mount.next_ts(), self._gen))

    async def _start_upload(self, s: Sealed) -> None:
        self._sealed.append(s)
        await self._mount.upload_slots.acquire()  # back-pressure: bounded uploads in flight
        assert self._mount.nursery is not None
        self._mount.nursery.start_soon(self._upload, s)

    def assign_ahead(self) -> None:
        """Asks for the first chunk's assignment now (once): called at the first write,
        and at create, since a new file is about to be written. One asked for ahead is
        taken at once; otherwise a batch is asked for in the background."""
        if self._ahead_done is None and self._mount.nursery is not None:
            self._ahead_done = trio.Event()
            uploader = self._mount.uploader
            a = uploader.pooled(self.path)
            if a is None:
                self._mount.nursery.start_soon(self._assign_ahead, self._ahead_done)
                return
            self._ahead, self._ahead_at = a, time.monotonic()
            self._ahead_done.set()
            self._refill_soon()

    def _refill_soon(self) -> None:
        """Asks for more file ids in the background when those at hand run low."""
        uploader = self._mount.uploader
        if self._mount.nursery is not None and uploader.needs_refill(self.path):
            self._mount.nursery.start_soon(self._mount.off_loop, uploader.refill, self.path)

    async def _assign_ahead(self, done: trio.Event) -> None:
        try:
            self._ahead = await self._mount.off_loop(self._mount.uploader.assign, self.path)
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
        cs = self._mount.opts.chunk_size
        base = s.page.index * cs
        try:
            for start, end in s.page.ranges:
                data = bytes(s.page.buf[start:end])
                first = await self._take_ahead()
                fid, etag = await self._mount.off_loop(self._mount.uploader.upload, self.path,
                                                      data, first)
                s.chunks.append(PB["FileChunk"](file_id=fid, offset=base + start,
                                                size=end - start, modified_ts_ns=s.ts_ns,
                                                e_tag=etag))
        except BaseException as e:  # the page is kept and sent again (see _settle)
            s.error = e
            self._last_error = e
            log.error("write of %s failed (its bytes are kept and retried): %s",
                      self.path, e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._mount.upload_slots.release()
            s.done.set()
            self._settle()

    def _settle(self) -> None:
        """Moves finished uploads into the entry, oldest first, so a newer page never lies
        under an older one that is still being uploaded. A failed upload's page waits to
        be sent again, with its stamp, so it still lies under anything written later."""
        while self._sealed and self._sealed[0].done.is_set():
            s = self._sealed.pop(0)
            if s.gen != self._gen:
                continue  # superseded by another client's content meanwhile
            if s.error is not None:
                s.chunks = []
                self._retry.append(s)
                continue
            # Chunks past a truncation made meanwhile are clipped like the others.
            chunks = []
            for c in s.chunks:
                if c.offset < self._size:
                    c.size = min(c.size, self._size - c.offset)
                    chunks.append(c)
            self._state.add_chunks(chunks)
            self._keep_clean(s.page, chunks)

    def _keep_clean(self, page: Page, chunks: list[Any]) -> None:
        base = page.index * self._mount.opts.chunk_size
        for c in chunks:
            data = bytes(page.buf[c.offset - base:c.offset - base + c.size])
            if len(data) != c.size:  # (not this page's bytes): an older piece kept could
                self._drop_clean()   # lie over this chunk's, so none are kept
                return
            self._clean.append((c.offset, data))
            self._clean_bytes += len(data)
        while self._clean_bytes > CLEAN_KEEP_BYTES:
            self._clean_bytes -= len(self._clean.pop(0)[1])

    def _drop_clean(self) -> None:
        self._clean.clear()
        self._clean_bytes = 0

    async def drain(self) -> None:
        """Uploads every dirty page (and retries failed ones) and waits for all uploads of
        this file. Raises ``WriteFailed`` if one failed again (its bytes are kept)."""
        retry, self._retry = self._retry, []
        for s in retry:
            await self._start_upload(Sealed(s.page, s.ts_ns, self._gen))
        for index in list(self._pages):
            await self._seal(index)
        while True:
            pending = [s for s in self._sealed if not s.done.is_set()]
            if not pending:
                break
            await pending[0].done.wait()
        self._settle()
        if self._retry:
            raise WriteFailed(f"{self.path}: {self._last_error}") from self._last_error
        self._last_error = None

    async def commit(self) -> None:
        """Makes everything written so far durable and visible: uploads, then one entry
        write based on the filer's version. Raises ``WriteFailed`` (EIO) if an upload
        failed; the bytes stay buffered, and the next commit tries again."""
        async with self._lock:
            if await self._commit_small():
                return
            await self.drain()
            await self._save()

    def _small_pieces(self) -> list[tuple[Sealed, int, int, Assignment]] | None:
        """What ``_commit_small`` uploads: every dirty range, each with a file id at hand
        (none asked for now), when nothing else is pending; None otherwise."""
        if self._sealed or self._retry or not self._pages or self.unlinked:
            return None
        ranges = [(p, s, e) for p in self._pages.values() for s, e in p.ranges]
        if not ranges or len(ranges) > SMALL_COMMIT_PIECES or \
                sum(e - s for _, s, e in ranges) > SMALL_COMMIT_BYTES:
            return None
        got: list[Assignment] = []
        if self._ahead_done is not None and self._ahead_done.is_set():
            a, self._ahead = self._ahead, None
            if a is not None and time.monotonic() - self._ahead_at <= ASSIGNMENT_FRESH_S:
                got.append(a)
        while len(got) < len(ranges):
            a = self._mount.uploader.pooled(self.path)
            if a is None:
                break
            got.append(a)
        self._refill_soon()
        if len(got) < len(ranges):
            self._ahead, self._ahead_at = (got[0], time.monotonic()) if got else (None, 0.0)
            return None  # (ids taken from the pool and not used are dropped: harmless)
        sealed: dict[int, Sealed] = {}
        for index in list(self._pages):
            page = self._pages.pop(index)
            if not page.ranges:
                continue  # clipped away by a truncation: nothing to store
            sealed[index] = Sealed(page, self._mount.next_ts(), self._gen)
            self._sealed.append(sealed[index])
        return [(sealed[p.index], s, e, a) for (p, s, e), a in zip(ranges, got)]

    async def _commit_small(self) -> bool:
        """A commit of a few small dirty ranges with nothing else pending (a small file's
        close, a database's fsync) in one worker-thread call: each range POSTed on a file
        id already at hand, then the entry written, with no return to the loop between.
        The entry is built before the call with those ids; it is sent only once every
        upload succeeded on its id, so it never names bytes that are not stored. Anything
        else (an upload that failed or moved to another id, an entry write refused) leaves
        the uploads settled as ``_upload`` leaves them and returns False: the usual commit
        follows and does the rest. True when done."""
        pieces = self._small_pieces()
        if pieces is None:
            return False
        cs = self._mount.opts.chunk_size
        chunks = []
        for s, start, end, a in pieces:
            c = PB["FileChunk"](file_id=a.file_id, offset=s.page.index * cs + start,
                                size=end - start, modified_ts_ns=s.ts_ns)
            s.chunks.append(c)
            chunks.append(c)
        entry = self._state.to_send(time.time_ns(), adding=chunks)
        expect = self._state.base_fids if self._created else None
        directory = split_path(self.path)[0]
        uploads = [(a, bytes(s.page.buf[start:end])) for s, start, end, a in pieces]
        out = SmallCommit()
        announced = self._announced
        try:
            async with self._mount.upload_slots:
                await self._mount.off_loop(self._mount.uploader.upload_and_save, self.path,
                                           uploads, entry, directory, expect, out)
        finally:  # also when it raised: what was stored is settled, the rest kept
            self._small_settle(pieces, chunks, out)
        if not out.saved:
            return False
        self._created = True
        self._state.committed(entry, ours=announced == self._announced)
        self._mount.committed(self.path, self.stored_entry())
        return True

    def _small_settle(self, pieces: list[tuple[Sealed, int, int, Assignment]],
                      chunks: list[Any], out: SmallCommit) -> None:
        """The small commit's uploads end as ``_upload`` ends them: stored chunks get their
        ids and e_tags, a page with a piece not stored keeps its bytes for a retry."""
        for (s, _, _, _), c, stored in itertools.zip_longest(pieces, chunks, out.stored):
            if stored is None:
                s.error = out.error or WriteFailed(f"{self.path}: upload not done")
                self._last_error = s.error
            else:
                c.file_id, c.e_tag = stored
        if out.error is not None:
            log.error("write of %s failed (its bytes are kept and retried): %s",
                      self.path, out.error)
        for s, _, _, _ in pieces:
            if not s.done.is_set():
                s.done.set()
        self._settle()

    async def _save(self) -> None:
        """Writes the merged entry under the condition that the filer still has the base;
        when it has another version, re-reads it and lays this writer's changes on it."""
        for _ in range(SAVE_ATTEMPTS):
            if self.unlinked or (self._created and not self._state.dirty):
                return
            entry = self._state.to_send(time.time_ns())
            directory = split_path(self.path)[0]
            announced = self._announced
            try:
                if self._created:
                    await self._mount.off_loop(self._mount.grpc.update, directory, entry,
                                              self._state.base_fids)
                else:
                    await self._mount.off_loop(self._mount.grpc.create, directory, entry,
                                              False, True)
            except Conflict:
                await self._reread()
                continue
            except FilerRpcError as e:
                if e.errno != errno.ENOENT or not self._created:
                    raise
                await self._vanished()
                continue
            self._created = True
            self._state.committed(entry, ours=announced == self._announced)
            self._mount.committed(self.path, self.stored_entry())
            return
        raise WriteFailed(f"{self.path}: changed elsewhere at each of {SAVE_ATTEMPTS} "
                          "tries to write it")

    async def _reread(self) -> None:
        """The filer refused the write: another version is there. Follows it."""
        fresh = await self._mount.off_loop(self._mount.grpc.lookup, self.path)
        if fresh is None:
            await self._vanished()
            return
        self._created = True
        log.warning("%s changed elsewhere since this mount read it: this handle's changes "
                    "go on top of that version", self.path)
        if not self._state.same_content(fresh):
            self._drop_clean()
        self._state.rebase(fresh)
        self._size = max(self._state.size, self._pending_end())

    async def _vanished(self) -> None:
        """The entry is not at our path: a rename this mount has not heard of yet (wait
        for its event, which moves ``path``), or a removal (the handle writes nowhere, as
        weed mount does not bring a file back that another client removed)."""
        old = self.path
        deadline = trio.current_time() + RENAME_WAIT_S
        while self.path == old and not self.unlinked and trio.current_time() < deadline:
            await trio.sleep(0.05)
        if self.path == old and not self.unlinked:
            log.warning("%s was removed elsewhere while open here; what this handle wrote "
                        "since its last commit is dropped", old)
            self.unlink()

    async def truncate(self, size: int) -> None:
        """Sets the size: drops bytes past it (chunks are clipped, as weed mount does) or
        grows the file with a hole."""
        async with self._lock:
            self._take_inline()
            await self.drain()
            self._drop_clean()
            self._state.truncate(size)
            self._size = size

    async def allocate(self, end: int) -> None:
        """``fallocate`` (mode 0, ``posix_fallocate``): the file grows to ``end`` with a
        hole if it is shorter; nothing else changes (the filer has no reservations)."""
        if end <= self._size:
            return
        self._take_inline()  # an entry with inline bytes has no size of its own
        self._state.extend(end)
        self._state.bytes_written()
        self._size = end

    async def zero_range(self, offset: int, length: int, keep_size: bool) -> None:
        """``fallocate`` PUNCH_HOLE or ZERO_RANGE: ``[offset, offset+length)`` reads as
        zeros. Once everything written is in chunks, chunks wholly inside the range leave
        the entry and zeros are written (as any write) only over what other chunks still
        cover there. Without ``keep_size`` the file grows to the range's end."""
        end = offset + length
        stop = min(end, self._size)
        if stop > offset:
            async with self._lock:
                self._take_inline()
                await self.drain()  # every byte written so far is in a chunk now
                self._drop_clean()
                self._state.punch(offset, stop)
                covered = self._state.covered(offset, stop)
            cs = self._mount.opts.chunk_size
            for lo, hi in covered:
                while lo < hi:
                    n = min(hi - lo, cs - lo % cs)
                    await self.write(lo, bytes(n))
                    lo += n
            self._state.bytes_written()
        if not keep_size and end > self._size:
            await self.allocate(end)

    # -- another client's change -----------------------------------------------------------

    def remote_version(self, entry: Any) -> None:
        """The filer announced another client's version of this file. Its attributes are
        taken (changes made here stay on top); if its content differs from the base, it
        supersedes the bytes written here and not committed yet, as weed mount drops a
        handle's dirty pages then (logged)."""
        self._announced += 1
        if not self._created or self.unlinked:
            return  # not on the filer yet: the first commit's condition decides
        if not self._state.same_content(entry):
            dropped = sum(p.covered() for p in self._pages.values())
            dropped += sum(s.page.covered() for s in [*self._sealed, *self._retry])
            self._pages.clear()
            self._retry.clear()
            self._drop_clean()
            self._gen += 1  # uploads in flight now end in no entry
            self._inline_taken = False
            dropped += self._state.supersede()
            if dropped:
                log.warning("%s: another client's newer content supersedes %d bytes written "
                            "here and not yet committed (as weed mount does)", self.path,
                            dropped)
        self._state.rebase(entry)
        self._size = max(self._state.size, self._pending_end())

    def _pending_end(self) -> int:
        cs = self._mount.opts.chunk_size
        ends = [p.index * cs + p.ranges[-1][1] for p in
                [*self._pages.values(), *(s.page for s in [*self._sealed, *self._retry]
                                         if s.gen == self._gen)] if p.ranges]
        return max(ends, default=0)

    # -- metadata changes ------------------------------------------------------------------

    async def change_attributes(self, values: dict[str, int]) -> None:
        """Sets attributes (chmod, chown, utimens). With handles open they go with the
        next commit (flush, fsync, close), as the bytes do: ``tar`` sets times, owner and
        mode through the open file before it closes, and one entry write carries all of
        it. Without handles they are committed now."""
        if self._handles and not self._lock.locked():
            self._state.set_attributes(values)  # (no commit runs: no wait for the lock)
            return
        async with self._lock:
            self._state.set_attributes(values)
        if self._handles == 0:
            await self.commit()

    def xattr(self, key: str) -> bytes | None:
        """The extended attribute ``key`` of the file as written here, or None."""
        value = self._state.view().extended.get(key)
        return bytes(value) if value is not None else None

    async def change_xattr(self, key: str, value: bytes | None) -> bool:
        """Sets or removes an extended attribute and commits; False (nothing done) when
        removing one that is not there."""
        async with self._lock:
            if value is None and not self._state.has_xattr(key):
                return False
            self._state.set_xattr(key, value)
        await self.commit()
        return True

    # -- reads ---------------------------------------------------------------------------

    async def read(self, offset: int, size: int, reader: ReadPath) -> bytes:
        """Bytes as written, dirty ones included; short at the end of the file."""
        n = max(0, min(size, self._size - offset))
        if n == 0:
            return b""
        buf = bytearray(n)
        # The pages to lay over the chunks are taken before any await: an upload that
        # finishes meanwhile leaves the sealed list, while the chunk list read below may
        # still be the one without it. A page taken here keeps its bytes either way.
        pending = sorted([*self._retry, *self._sealed], key=lambda s: s.ts_ns)
        layers = [s.page for s in pending if s.gen == self._gen] + list(self._pages.values())
        clean = list(self._clean)
        view_entry = self._state.view()
        inline = None if self._inline_taken else self._state.inline_content()
        cs = self._mount.opts.chunk_size
        if inline is not None:
            buf[:] = inline[offset:offset + n].ljust(n, b"\0")
        elif view_entry.chunks:
            if _covers([(at, at + len(data)) for at, data in clean]
                       + [(p.index * cs + s, p.index * cs + e)
                          for p in layers for s, e in p.ranges], offset, offset + n):
                self._mount.clean_reads += 1
            else:
                view = await self._base_view(reader)
                await reader.readinto_async(view, memoryview(buf), offset,
                                            self._mount.off_loop)
        for at, data in clean:  # the newest bytes there, unless a page below lies over them
            lo, hi = max(at, offset), min(at + len(data), offset + n)
            if lo < hi:
                buf[lo - offset:hi - offset] = data[lo - at:hi - at]
        for page in layers:
            base = page.index * cs
            for s, e in page.ranges:
                lo, hi = max(base + s, offset), min(base + e, offset + n)
                if lo < hi:
                    buf[lo - offset:hi - offset] = page.buf[lo - base:hi - base]
        return bytes(buf)

    async def _base_view(self, reader: ReadPath) -> FileView:
        key = (self._state.version, self._size)
        if self._view is None or self._view_key != key:
            entry = entry_from_pb(self._state.view(), self.path)
            entry.size = self._size
            entry.content = None
            self._view = await self._mount.off_loop(reader.view, entry)
            self._view_key = key
        return self._view

    def merged(self) -> Any:
        """The entry as written here (a protobuf; uncommitted times not yet set): read it,
        do not modify it."""
        return self._state.view()

    def attributes_entry(self) -> Any:
        """The read-side ``Entry`` for this file as written (size and times; no chunk
        list: ``size`` is the size as written, which every chunk ends within)."""
        e = entry_from_pb(self._state.view(), self.path, chunks=False)
        e.size = self._size
        e.content = None
        if (self._pages or self._sealed or self._state.bytes_changed) \
                and not self._state.mtime_set:
            e.mtime_ns = max(e.mtime_ns, self._mount.last_write_ns)
        return e
