"""``seaweed_rdma.Client``: the Python API over the fast path and HTTP."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .discovery import discover_master
from .errors import ClientClosed, IsADirectory, NotADirectory
from .fastpath import VERBS_SLOT_SIZE, FastPath
from .fileobj import SeaweedRawFile
from .filer import Entry, FilerClient, normalize_path
from .master import MasterClient
from .reader import FileView, ReadPath
from .stats import Stats
from .volume_http import VolumeHttpReader


class Client:
    """Reads files from a SeaweedFS filer.

    ``filer`` is ``host:port`` (or ``host:port.grpcPort``). ``master`` is found through the
    filer when not given. ``sidecar`` and ``transport`` choose the fast path (``None``: HTTP
    only). ``jwt_key`` is the cluster's read-JWT signing key, if reads need a token.
    ``meta_ttl`` is how long entry metadata is reused before the filer is asked again.
    ``fast_timeout`` bounds each fast-path batch; what misses it is read over HTTP, unless
    ``fallback=False``, which makes such reads fail instead. ``fast_max_inflight`` caps the
    requests in flight per sidecar connection. ``verify=True`` reads every chunk whole and
    checks it against the needle's CRC and the filer's MD5 ``e_tag``, so a sidecar or
    replica that returns wrong bytes is caught (and skipped) at the cost of whole-chunk reads.

    ``close()`` (or leaving a ``with`` block) releases the engine's threads and connections;
    calls after it raise ``ClientClosed``.
    ``fast_connect_timeout`` bounds a sidecar connection's handshake (over verbs it
    includes connecting the queue pair). ``fast_verbs_slot_size`` is the size of each
    registered receive slot over verbs: a compressed or encrypted chunk is read whole, so one
    stored larger than a slot goes over HTTP instead (or fails, with ``fallback=False``).
    The default, 1 MiB + 4 KiB, holds a 1 MiB chunk stored encrypted (28 bytes longer than
    its plaintext). ``fast_verbs_slots`` caps the slots of each verbs connection (its reads
    in flight); reads beyond them wait for a free slot. Each verbs connection registers
    (pins) its own slots when it connects, so pinned memory grows with the connections:
    see docs/operations.md, "Pinned memory on the reader's host". ``fast_busy_poll_us``
    is how long a small read keeps checking for its answer before the thread sleeps: an
    answer due in microseconds then costs no wake-up (0: never spin; see
    docs/operations.md, "Busy polling").
    """

    def __init__(
        self,
        filer: str,
        sidecar: str | dict[str, str] | None = None,
        transport: str = "auto",
        *,
        master: str | None = None,
        jwt_key: str | None = None,
        timeout: float = 30.0,
        meta_ttl: float = 1.0,
        max_workers: int = 16,
        fast_timeout: float = 5.0,
        fast_max_inflight: int = 128,
        fallback: bool = True,
        verify: bool = False,
        fast_connect_timeout: float = 1.0,
        fast_verbs_slot_size: int = VERBS_SLOT_SIZE,
        fast_verbs_slots: int = 16,
        fast_busy_poll_us: int = 50,
    ) -> None:
        if transport not in ("auto", "tcp", "verbs", "http"):
            raise ValueError(f"transport must be auto, tcp, verbs or http, not {transport!r}")
        if fast_busy_poll_us < 0:
            raise ValueError(f"fast_busy_poll_us must be >= 0, not {fast_busy_poll_us}")
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=max(64, max_workers * 2),
                                max_keepalive_connections=max(32, max_workers)),
            follow_redirects=False,
        )
        self.filer = FilerClient(filer, self._http)
        self.master = MasterClient(master or discover_master(filer, timeout), self._http)
        self.transport = transport
        self.sidecar = sidecar
        self._stats = Stats()
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="seaweed-rdma")
        fast = None
        if sidecar is not None and transport != "http":
            fast = FastPath(sidecar, transport, self.master, self._stats, jwt_key=jwt_key,
                            timeout=fast_timeout, max_inflight=fast_max_inflight,
                            connect_timeout=fast_connect_timeout,
                            verbs_slot_size=fast_verbs_slot_size,
                            verbs_slots=fast_verbs_slots,
                            busy_poll_us=fast_busy_poll_us)
        self.reader = ReadPath(VolumeHttpReader(self.master, self._http, jwt_key),
                               self._stats, self._executor, fast, fallback=fallback,
                               verify=verify)
        """The read path this client, its file objects, fsspec and the mount all use."""
        self._closed = False
        self._meta_ttl = meta_ttl
        self._meta: dict[str, tuple[float, Entry, FileView | None]] = {}
        self._meta_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Releases the engine (its threads, sidecar connections and eventfds), the HTTP
        connections and the worker threads. Idempotent; later calls raise ``ClientClosed``."""
        if self._closed:
            return
        self._closed = True
        if self.reader.fast is not None:
            self.reader.fast.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this seaweed_rdma.Client is closed")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ----------------------------------------------------------------------

    def entry(self, path: str) -> Entry:
        """The filer entry at ``path`` (cached for ``meta_ttl`` seconds)."""
        return self._cached(path)[0]

    def _cached(self, path: str) -> tuple[Entry, FileView | None]:
        self._check_open()
        path = normalize_path(path)
        now = time.monotonic()
        with self._meta_lock:
            hit = self._meta.get(path)
        if hit and hit[0] > now:
            return hit[1], hit[2]
        entry = self.filer.get_entry(path)
        with self._meta_lock:
            self._meta[path] = (now + self._meta_ttl, entry, None)
        return entry, None

    def view(self, path: str) -> FileView:
        """``path`` planned for reading (cached with its entry for ``meta_ttl``); pass it to
        ``reader`` methods to read the same version many times."""
        entry, view = self._cached(path)
        if view is None:
            if entry.is_dir:
                raise IsADirectory(f"{entry.path}: is a directory")
            view = self.reader.view(entry)
            with self._meta_lock:
                hit = self._meta.get(entry.path)
                if hit and hit[1] is entry:
                    self._meta[entry.path] = (hit[0], entry, view)
        return view

    def remember(self, entry: Entry) -> None:
        """Caches an entry learnt elsewhere (a directory listing) for ``meta_ttl``."""
        expiry = time.monotonic() + self._meta_ttl
        with self._meta_lock:
            hit = self._meta.get(entry.path)
            # Keep a planned view of the same version rather than replanning it.
            if hit and hit[2] is not None and hit[1].mtime_ns == entry.mtime_ns \
                    and hit[1].chunks == entry.chunks:
                self._meta[entry.path] = (expiry, hit[1], hit[2])
            else:
                self._meta[entry.path] = (expiry, entry, None)

    def invalidate(self, path: str | None = None) -> None:
        """Drops cached metadata for ``path`` (or everything)."""
        with self._meta_lock:
            if path is None:
                self._meta.clear()
            else:
                self._meta.pop(normalize_path(path), None)

    def stat(self, path: str) -> dict[str, Any]:
        """Attributes of ``path``: type, size, mode (POSIX), times, owner, inode, chunks."""
        entry, _ = self._cached(path)
        size = entry.file_size
        kind = "directory" if entry.is_dir else "symlink" if entry.is_symlink else "file"
        return {
            "path": entry.path, "name": entry.name, "type": kind, "size": size,
            "mode": entry.mode, "mtime_ns": entry.mtime_ns, "ctime_ns": entry.ctime_ns,
            "crtime_ns": entry.crtime_ns, "uid": entry.uid, "gid": entry.gid,
            "inode": entry.inode, "mime": entry.mime, "chunks": len(entry.chunks),
            "symlink_target": entry.symlink_target, "inline": entry.content is not None,
        }

    def scandir(self, path: str) -> list[Entry]:
        """Entries of directory ``path``."""
        entry, _ = self._cached(path)
        if not entry.is_dir:
            raise NotADirectory(f"{entry.path}: not a directory")
        return list(self.filer.iter_dir(path))

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path``, as ``os.listdir`` gives them."""
        return [e.name for e in self.scandir(path)]

    # -- reads ---------------------------------------------------------------------

    def readinto(self, path: str, buffer: Any, offset: int = 0) -> int:
        """Reads into ``buffer`` (any writable contiguous buffer) from ``offset``; returns
        the number of bytes read, short at end of file as POSIX ``pread`` is."""
        view = self.view(path)
        return self.reader.readinto(view, memoryview(buffer).cast("B"), offset)

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        """Reads ``size`` bytes (default: to the end) from ``offset``. The result is filled
        in place by the engine: no copy between the network and the returned ``bytes``."""
        if offset < 0 or (size is not None and size < 0):
            raise ValueError("offset and size must be >= 0")
        view = self.view(path)
        if size is None:
            size = max(0, view.size - offset)
        return self.reader.read(view, offset, size)

    def open(self, path: str, mode: str = "rb", buffering: int = 1 << 20) -> io.BufferedReader:
        """A seekable binary file object; only ``"rb"`` is supported."""
        if mode not in ("rb", "r"):
            raise ValueError(f"mode {mode!r} not supported: seaweed_rdma reads only ('rb')")
        raw = SeaweedRawFile(self.reader, normalize_path(path), self.view(path))
        return io.BufferedReader(raw, buffer_size=buffering)

    def read_fid(self, file_id: str, offset: int = 0, size: int | None = None) -> bytes:
        """Reads a needle's data by file id (``"3,01637037d6"``), bypassing the filer: over
        the fast path when there is one (whole needle, CRC-checked), else over HTTP.

        Raises ``InvalidFileId`` for a malformed id and ``NeedleNotFound`` when no replica
        has it (a wrong cookie reads as not found, as on the volume server).
        """
        from ._core import parse_fid

        self._check_open()
        parse_fid(file_id)
        if offset < 0 or (size is not None and size < 0):
            raise ValueError("offset and size must be >= 0")
        return self.reader.read_fid(file_id, offset, size)

    def stats(self) -> dict[str, Any]:
        """Bytes and reads per path (fast, http), fallbacks, errors, latency percentiles."""
        snap = self._stats.snapshot()
        fast = self.reader.fast
        snap["transport"] = fast.transport if fast is not None else "http"
        if fast is not None:
            snap["sidecars"] = fast.health()
            snap["engine"] = dict(fast.engine.stats())
            snap["engine"]["closed"] = fast.engine.closed
        return snap
