"""Uploads of the mount's writes: the one owner of what every writer of one mount shares
(``WriteMount``): the ``Uploader`` (file ids assigned through the filer, chunks POSTed to
volume servers), the upload slots (``-concurrentWriters``) and the ``modified_ts_ns`` clock.

A chunk's upload tries up to ``UPLOAD_ATTEMPTS`` assignments, as ``weed mount`` retries;
file ids are asked for ``ASSIGN_BATCH`` at a time per directory, used only while fresh, and
asked for again in the background before they run out. Chunks go over kept-alive
connections (``keepalive``). ``upload_and_save`` stores a small commit's ranges and writes
its entry in one blocking call.
What a failed upload means for the file's bytes is ``writes.FileWriter``'s to decide.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import urllib3

from ..errors import SeaweedRdmaError
from ..filer_grpc import Assignment, FilerGrpc, FilerRpcError, FilerUnreachable, split_path
from .keepalive import KeepAlivePool

UPLOAD_ATTEMPTS = 3  # each on a new assignment, as weed mount retries
ASSIGNMENT_FRESH_S = 10.0  # an assignment made ahead is used only this soon
ASSIGN_BATCH = 16  # file ids asked for at once (per directory; see Uploader.assign)
REFILL_AHEAD_S = 3.0  # ids are asked for again this long before those at hand go stale


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
    """Assigns a file id through the filer and POSTs one needle to the volume server (on
    kept-alive connections, ``keepalive``), trying a new assignment when a volume server
    fails. Blocking: run it off the loop."""

    def __init__(self, grpc: FilerGrpc, opts: WriteOptions) -> None:
        self.grpc = grpc
        self.opts = opts
        self.http = KeepAlivePool(max(4, opts.concurrent_writers))
        self._pool: dict[str, list[tuple[Assignment, float]]] = {}
        self._pool_lock = threading.Lock()
        self._refilling: set[str] = set()  # directories whose next batch is being asked for
        self.uploads = 0
        self.bytes = 0
        self.retries = 0
        self.failures = 0
        self.small_commits = 0  # commits done by upload_and_save (uploads and entry)

    def close(self) -> None:
        """Closes the HTTP connections."""
        self.http.close()

    def assign(self, path: str) -> Assignment:
        """One assignment for a chunk of ``path``, with the mount's placement flags. File
        ids come ``ASSIGN_BATCH`` at a time per directory (the filer's path rules are
        per directory), each used once and only while fresh: small files written one
        after another cost one ``AssignVolume`` per batch, not one each."""
        a = self.pooled(path)
        if a is not None:
            return a
        got = self._assign_batch(path)
        self._pool_add(path, got[1:])
        return got[0]

    def _assign_batch(self, path: str) -> tuple[Assignment, ...]:
        return self.grpc.assign_many(path=path, count=ASSIGN_BATCH,
                                     collection=self.opts.collection,
                                     replication=self.opts.replication,
                                     ttl_sec=self.opts.ttl_sec, disk_type=self.opts.disk_type,
                                     data_center=self.opts.data_center)

    def _pool_add(self, path: str, got: tuple[Assignment, ...]) -> None:
        if not got:
            return
        directory = split_path(path)[0]
        now = time.monotonic()
        with self._pool_lock:
            if directory not in self._pool and len(self._pool) >= 256:
                self._pool.pop(next(iter(self._pool)))  # bounded: the oldest directory goes
            # Newest at the front: ids are taken from the end, the oldest first.
            self._pool[directory] = [(a, now) for a in reversed(got)] + \
                self._pool.get(directory, [])

    def pooled(self, path: str) -> Assignment | None:
        """A fresh file id for a chunk of ``path`` from those asked for ahead, or None
        (then ``assign`` asks the filer). Never blocks on the network: the trio thread
        takes ids with it, sparing a thread hop per small file."""
        directory = split_path(path)[0]
        now = time.monotonic()
        with self._pool_lock:
            pool = self._pool.get(directory)
            while pool:
                a, at = pool.pop()
                if now - at < ASSIGNMENT_FRESH_S:
                    return a
            self._pool.pop(directory, None)
        return None

    def needs_refill(self, path: str) -> bool:
        """True (once, until ``refill`` ends) when the ids at hand for ``path``'s
        directory run low: the caller asks for the next batch in the background, so a
        burst of small files never waits for ``AssignVolume`` at a close."""
        directory = split_path(path)[0]
        # Ids that go stale within REFILL_AHEAD_S count as gone already.
        since = time.monotonic() - (ASSIGNMENT_FRESH_S - REFILL_AHEAD_S)
        enough = ASSIGN_BATCH // 4
        with self._pool_lock:
            if directory in self._refilling:
                return False
            usable = 0
            for _, at in self._pool.get(directory, ()):  # newest first: stop at a stale one
                if at <= since or usable >= enough:
                    break
                usable += 1
            if usable >= enough:
                return False
            self._refilling.add(directory)
            return True

    def refill(self, path: str) -> None:
        """Asks for a batch of ids for ``path``'s directory and keeps them all (after
        ``needs_refill``; a failure is left to the upload that finds none)."""
        try:
            self._pool_add(path, self._assign_batch(path))
        except Exception:  # (runs in the mount's nursery: must not end it)
            pass
        finally:
            with self._pool_lock:
                self._refilling.discard(split_path(path)[0])

    def upload_and_save(self, path: str, uploads: list[tuple[Assignment, bytes]],
                        entry: Any, directory: str, expect_fids: list[str] | None,
                        out: SmallCommit) -> None:
        """Stores each ``(assignment, bytes)`` (as ``upload``), then, only if every one was
        stored under its assignment's file id (the ids ``entry`` names), writes ``entry``:
        ``CreateEntry`` under IF_NOT_EXISTS when ``expect_fids`` is None, else
        ``UpdateEntry`` under IF_CHUNKS_EQUAL ``expect_fids``. Fills in the e_tags of
        ``entry``'s chunks. Results go to ``out``; a failed entry write leaves
        ``out.saved`` False (the caller's usual commit writes it, with its own handling of
        conflicts and outages)."""
        for a, data in uploads:
            try:
                out.stored.append(self.upload(path, data, a))
            except WriteFailed as e:
                out.error = e
                return
        etags = dict(out.stored)
        if len(out.stored) != len(uploads) or any(
                fid != a.file_id for (a, _), (fid, _) in zip(uploads, out.stored)):
            return
        for c in entry.chunks:
            if c.file_id in etags:
                c.e_tag = etags[c.file_id]
        try:
            if expect_fids is None:
                self.grpc.create(directory, entry, False, True)
            else:
                self.grpc.update(directory, entry, expect_fids)
        except FilerUnreachable:
            raise  # ridden through already: the commit fails now, as the usual one would
        except FilerRpcError:
            return
        out.saved = True
        self.small_commits += 1

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
            except FilerUnreachable as e:  # retried for the whole deadline already
                reasons.append(f"assign: {e}")
                break
            except FilerRpcError as e:
                reasons.append(f"assign: {e}")
                continue
            # The bytes as the request body, not a multipart form: the volume server
            # stores both the same way, and skipping the form halved its time per 2 MiB.
            headers = {"Content-Type": "application/octet-stream"}
            if a.auth:
                headers["Authorization"] = f"BEARER {a.auth}"
            try:
                status, text = self.http.post(a.url, f"/{a.file_id}", data, headers)
            except (OSError, urllib3.exceptions.HTTPError) as e:
                reasons.append(f"POST {a.url}/{a.file_id}: {e!r}")
                continue
            if status >= 300:
                reasons.append(f"POST {a.url}/{a.file_id}: HTTP {status} "
                               f"{text[:200].decode(errors='replace')}")
                continue
            self.uploads += 1
            self.bytes += len(data)
            return a.file_id, etag
        self.failures += 1
        raise WriteFailed(f"{path}: upload of {len(data)} bytes failed on "
                          f"{len(reasons)} assignments: {'; '.join(reasons)}")


@dataclass
class SmallCommit:
    """What ``Uploader.upload_and_save`` did, filled in as it goes (so a caller sees the
    uploads that were stored even when the call ended otherwise): ``(file_id, e_tag)`` per
    upload stored, in order; the upload error that stopped it; whether the entry was
    written."""

    stored: list[tuple[str, str]] = field(default_factory=list)
    error: BaseException | None = None
    saved: bool = False


class WriteMount:
    """What the writers of one mount share: the filer's gRPC API, the uploader, the
    upload slots (``-concurrentWriters``) and the clock for ``modified_ts_ns``."""

    def __init__(self, grpc: FilerGrpc, opts: WriteOptions,
                 on_commit: Callable[[str, Any], None]) -> None:
        self.grpc = grpc
        self.opts = opts
        self.uploader = Uploader(grpc, opts)
        self.upload_slots = trio.Semaphore(max(1, opts.concurrent_writers))
        self._limiter = trio.CapacityLimiter(max(1, opts.concurrent_writers) + 8)
        self._on_commit = on_commit
        self._nursery: trio.Nursery | None = None
        self._last_ts = 0
        self.last_write_ns = 0
        self.clean_reads = 0  # reads a writer answered from the bytes it keeps, no GET

    def run_in(self, nursery: trio.Nursery) -> None:
        """Where uploads run, for the life of the mount (none start before)."""
        self._nursery = nursery

    @property
    def nursery(self) -> trio.Nursery | None:
        """Where uploads run (None until ``run_in``)."""
        return self._nursery

    async def off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs a blocking call in a thread (uploads get their own thread limit)."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args),
                                             limiter=self._limiter)

    def next_ts(self) -> int:
        """A ``modified_ts_ns`` later than every one handed out before."""
        self._last_ts = max(time.time_ns(), self._last_ts + 1)
        self.last_write_ns = self._last_ts
        return self._last_ts

    def committed(self, path: str, stored: Any = None) -> None:
        """A writer wrote its entry at ``path``: what was cached of it is dropped; ``stored``
        (a protobuf, or None) is the entry it stored, when surely the filer's now."""
        self._on_commit(path, stored)

    def close(self) -> None:
        """Closes the uploader's connections."""
        self.uploader.close()

    def stats(self) -> dict[str, int]:
        """Upload counters."""
        u = self.uploader
        return {"uploads": u.uploads, "upload_bytes": u.bytes, "upload_retries": u.retries,
                "upload_failures": u.failures, "small_commits": u.small_commits,
                "upload_connects": u.http.connects, "clean_reads": self.clean_reads}
