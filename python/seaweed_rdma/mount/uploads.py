"""Uploads of the mount's writes: the one owner of what every writer of one mount shares
(``WriteMount``): the ``Uploader`` (file ids assigned through the filer, chunks POSTed to
volume servers), the upload slots (``-concurrentWriters``) and the ``modified_ts_ns`` clock.

A chunk's upload tries up to ``UPLOAD_ATTEMPTS`` assignments, as ``weed mount`` retries;
file ids are asked for ``ASSIGN_BATCH`` at a time per directory and used only while fresh.
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
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from ..errors import SeaweedRdmaError
from ..filer_grpc import Assignment, FilerGrpc, FilerRpcError, FilerUnreachable, split_path

UPLOAD_ATTEMPTS = 3  # each on a new assignment, as weed mount retries
ASSIGNMENT_FRESH_S = 10.0  # an assignment made ahead is used only this soon
ASSIGN_BATCH = 8  # file ids asked for at once (per directory; see Uploader.assign)


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
        self._pool: dict[str, list[tuple[Assignment, float]]] = {}
        self._pool_lock = threading.Lock()
        self.uploads = 0
        self.bytes = 0
        self.retries = 0
        self.failures = 0

    def close(self) -> None:
        """Closes the HTTP connections."""
        self.http.close()

    def assign(self, path: str) -> Assignment:
        """One assignment for a chunk of ``path``, with the mount's placement flags. File
        ids come ``ASSIGN_BATCH`` at a time per directory (the filer's path rules are
        per directory), each used once and only while fresh: small files written one
        after another cost one ``AssignVolume`` per batch, not one each."""
        directory = split_path(path)[0]
        now = time.monotonic()
        with self._pool_lock:
            pool = self._pool.get(directory)
            while pool:
                a, at = pool.pop()
                if now - at < ASSIGNMENT_FRESH_S:
                    return a
            self._pool.pop(directory, None)
        got = self.grpc.assign_many(path=path, count=ASSIGN_BATCH,
                                    collection=self.opts.collection,
                                    replication=self.opts.replication,
                                    ttl_sec=self.opts.ttl_sec, disk_type=self.opts.disk_type,
                                    data_center=self.opts.data_center)
        if len(got) > 1:
            with self._pool_lock:
                if len(self._pool) >= 256:  # bounded: the oldest directory goes
                    self._pool.pop(next(iter(self._pool)))
                self._pool.setdefault(directory, []).extend(
                    (a, now) for a in reversed(got[1:]))
        return got[0]

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
                r = self.http.post(f"http://{a.url}/{a.file_id}", headers=headers,
                                   content=data)
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
                          f"{len(reasons)} assignments: {'; '.join(reasons)}")


class WriteMount:
    """What the writers of one mount share: the filer's gRPC API, the uploader, the
    upload slots (``-concurrentWriters``) and the clock for ``modified_ts_ns``."""

    def __init__(self, grpc: FilerGrpc, opts: WriteOptions,
                 on_commit: Callable[[str], None]) -> None:
        self.grpc = grpc
        self.opts = opts
        self.uploader = Uploader(grpc, opts)
        self.upload_slots = trio.Semaphore(max(1, opts.concurrent_writers))
        self._limiter = trio.CapacityLimiter(max(1, opts.concurrent_writers) + 8)
        self._on_commit = on_commit
        self._nursery: trio.Nursery | None = None
        self._last_ts = 0
        self.last_write_ns = 0

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

    def committed(self, path: str) -> None:
        """A writer wrote its entry at ``path``: what was cached of it is dropped."""
        self._on_commit(path)

    def close(self) -> None:
        """Closes the uploader's connections."""
        self.uploader.close()

    def stats(self) -> dict[str, int]:
        """Upload counters."""
        u = self.uploader
        return {"uploads": u.uploads, "upload_bytes": u.bytes, "upload_retries": u.retries,
                "upload_failures": u.failures}
