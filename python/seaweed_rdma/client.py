"""``seaweed_rdma.Client``: the Python API over the fast path and HTTP."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from . import metastream, process
from .discovery import discover_master
from .errors import ClientClosed, IsADirectory, NotADirectory, SeaweedRdmaError
from .fastpath import VERBS_SLOT_SIZE, FastPath
from .fileobj import SeaweedFile, SeaweedRawFile
from .filer import Entry, FilerClient, normalize_path
from .held import HeldLimits, HeldMetadata
from .many import read_views
from .master import MasterClient
from .metastream import MetaStream
from .plainhttp import PlainHttpTransport
from .reader import FileView, ReadPath
from .stats import Stats
from .volume_http import VolumeHttpReader

log = logging.getLogger("seaweed_rdma.client")


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Everything a ``Client`` is made from; see ``Client`` for each setting."""

    filer: str
    sidecar: str | dict[str, str] | None = None
    transport: str = "auto"
    master: str | None = None
    jwt_key: str | None = None
    timeout: float = 30.0
    meta_ttl: float = 1.0
    max_workers: int = 16
    fast_timeout: float = 5.0
    fast_max_inflight: int = 128
    fallback: bool = True
    verify: bool = False
    fast_connect_timeout: float = 1.0
    fast_verbs_slot_size: int = VERBS_SLOT_SIZE
    fast_verbs_slots: int = 16
    fast_busy_poll_us: int = 50
    meta_stream: bool = True
    meta_list_dirs: bool = True
    meta_list_after: int = 2
    meta_max_entries: int = 200_000
    meta_max_bytes: int = 128 << 20
    fast_pinned_budget: int = 64 << 20
    fast_idle_timeout: float = 60.0
    fast_max_conns: int = 128


# How long after a client's first metadata fetch its stream starts, if a second fetch has
# not started it before.
STREAM_START_S = 1.0


class _Parts:
    """What a client uses that belongs to the process that built it: HTTP connections,
    the engine (threads, sidecar connections, registered memory), worker threads, locks,
    the counters of this process's reads and its cached metadata."""

    def __init__(self, c: ClientConfig) -> None:
        assert c.master is not None
        pool = httpx.Limits(max_connections=max(64, c.max_workers * 2),
                            max_keepalive_connections=max(32, c.max_workers))
        self.http = httpx.Client(
            timeout=httpx.Timeout(c.timeout, connect=min(c.timeout, 5.0)),
            # Plain http:// goes over urllib3: httpx's own transport imports httpcore,
            # and with it trio where installed, ~100 ms of a process's first call
            # (plainhttp). Only https:// loads certificates and httpcore, when first used.
            transport=PlainHttpTransport(keep=max(32, c.max_workers)),
            mounts={"https://": LazyTLS(limits=pool)},
            follow_redirects=False,
        )
        self.filer = FilerClient(c.filer, self.http)
        self.master = MasterClient(c.master, self.http)
        self.stats = Stats()
        self.executor = ThreadPoolExecutor(max_workers=c.max_workers,
                                           thread_name_prefix="seaweed-rdma")
        fast = None
        if c.sidecar is not None and c.transport != "http":
            fast = FastPath(c.sidecar, c.transport, self.master, self.stats,
                            jwt_key=c.jwt_key, timeout=c.fast_timeout,
                            max_inflight=c.fast_max_inflight,
                            connect_timeout=c.fast_connect_timeout,
                            verbs_slot_size=c.fast_verbs_slot_size,
                            verbs_slots=c.fast_verbs_slots,
                            busy_poll_us=c.fast_busy_poll_us,
                            pinned_budget=c.fast_pinned_budget,
                            idle_timeout=c.fast_idle_timeout, max_conns=c.fast_max_conns)
        self.reader = ReadPath(VolumeHttpReader(self.master, self.http, c.jwt_key, self.stats),
                               self.stats, self.executor, fast, fallback=c.fallback,
                               verify=c.verify)
        self.stream: MetaStream | None = None
        self._stream_lock = threading.Lock()
        self._stream_started = False
        self._forking = False
        self._timer: threading.Timer | None = None
        limits = HeldLimits(ttl=c.meta_ttl, max_entries=c.meta_max_entries,
                            max_bytes=c.meta_max_bytes,
                            list_dirs=c.meta_list_dirs, list_after=max(1, c.meta_list_after))
        follow = c.meta_stream and c.meta_ttl > 0 and metastream.usable_here()
        self.meta = HeldMetadata(self.filer, limits, self._start_stream if follow else None,
                                 on_listed=self._locate_volumes)
        self._filer_address = c.filer

    def _locate_volumes(self, entries: list[Entry]) -> None:
        """Learns where the volumes of a listed directory's files are, in one master
        request, so that neither the first read of each volume nor a mount's first open of
        a file there (offered to the native loop only when its volumes are known) waits
        for a lookup of its own."""
        self.master.prefetch({c.volume_id for e in entries for c in e.chunks})

    def _start_stream(self) -> None:
        """Follows the filer's metadata events from before the first fetch.

        The stream is made at the first fetch (which fixes the time it replays from) and
        started at the second, or ``STREAM_START_S`` after the first: the filer replays its
        log from that time, so no change is missed, and a process that looks up one path and
        reads it (a notebook's first ``read_parquet``) does not pay for gRPC while it does."""
        if self._stream_started:
            return
        with self._stream_lock:
            if self._stream_started:
                return
            if self.stream is None:
                self.stream = MetaStream(self._filer_address, "/", self.meta.on_event,
                                         self.meta.stream_state)
                self._timer = threading.Timer(STREAM_START_S, self._start_stream)
                self._timer.daemon = True
                self._timer.start()
                return
            if self._forking:
                return  # resume_after_fork starts it
            self._stream_started = True
            self.stream.start()

    def pause_for_fork(self) -> bool:
        """Ends the metadata stream before a fork (gRPC must not be mid-call then), and
        holds back one about to start."""
        with self._stream_lock:
            self._forking = True
            started = self._stream_started
        if self.stream is None:
            return True
        return not started or self.stream.pause_for_fork()

    def resume_after_fork(self) -> None:
        with self._stream_lock:
            self._forking = False
            started = self._stream_started
        if self.stream is None:
            return
        if started:
            self.stream.start()
        elif self._timer is not None and not self._timer.is_alive():
            self._start_stream()  # its time came during the fork

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.stream is not None:
            self.stream.stop()
        if self.reader.fast is not None:
            self.reader.fast.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.http.close()


class LazyTLS(httpx.BaseTransport):
    """An https transport (certificates verified) built on its first request."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._transport: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._transport is None:
                self._transport = httpx.HTTPTransport(verify=True, **self._kwargs)
        return self._transport.handle_request(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _from_config(config: ClientConfig) -> Client:
    """A new client from a pickled one's configuration."""
    client = Client.__new__(Client)
    client._start(config)
    return client


class Client:
    """Reads files from a SeaweedFS filer.

    ``filer`` is ``host:port`` (or ``host:port.grpcPort``). ``master`` is found through the
    filer when not given. ``sidecar`` and ``transport`` choose the fast path (``None``: HTTP
    only). ``jwt_key`` is the cluster's read-JWT signing key, if reads need a token.
    Metadata is held (see ``held``): a path read once, and a directory ``meta_list_after``
    (2) of whose paths were read (listed whole, ``meta_list_dirs``), are not asked of the
    filer again while the filer's metadata stream (``meta_stream``) says nothing changed;
    an overwrite, delete or rename by any writer shows as soon as its event arrives.
    Without the stream (or while it is down) entries are reused for ``meta_ttl`` seconds;
    ``meta_ttl=0`` holds nothing (every lookup asks the filer). At most
    ``meta_max_entries`` entries and about ``meta_max_bytes`` bytes are held.
    ``fast_timeout`` bounds each fast-path batch; what misses it is read over HTTP, unless
    ``fallback=False``, which makes such reads fail instead. ``fast_max_inflight`` caps the
    requests in flight per sidecar connection. ``verify=True`` reads every chunk whole and
    checks it against the needle's CRC and the filer's MD5 ``e_tag``, so a sidecar or
    replica that returns wrong bytes is caught (and skipped) at the cost of whole-chunk reads.

    ``close()`` (or leaving a ``with`` block) releases the engine's threads and connections;
    calls after it raise ``ClientClosed``.

    A client may be used across ``fork()`` (a forked child builds its own connections and
    engine on its first call, and counts its own ``stats()``) and pickled for ``spawn``
    (the copy carries ``config`` only). See docs/operations.md, "Worker processes".
    ``fast_connect_timeout`` bounds a sidecar connection's handshake (over verbs it
    includes connecting the queue pair). ``fast_verbs_slot_size`` is the size of each
    registered receive slot over verbs: a compressed or encrypted chunk is read whole, so one
    stored larger than a slot goes over HTTP instead (or fails, with ``fallback=False``).
    The default, 1 MiB + 4 KiB, holds a 1 MiB chunk stored encrypted (28 bytes longer than
    its plaintext). ``fast_verbs_slots`` caps the slots of each verbs connection (its reads
    in flight); reads beyond them wait for a free slot. Each verbs connection registers
    its own slots (its own rkey) within the process's pinned budget below: see
    docs/operations.md, "Pinned memory on the reader's host". ``fast_busy_poll_us``
    is how long a small read keeps checking for its answer before the thread sleeps: an
    answer due in microseconds then costs no wake-up (0: never spin; see
    docs/operations.md, "Busy polling"). Over verbs every connection's slots come from
    one pinned allocation of ``fast_pinned_budget`` bytes per process;
    ``fast_idle_timeout`` (seconds, 0: never) closes sidecar connections left unused, and
    past ``fast_max_conns`` open connections the least recently used idle one is closed
    (docs/scale.md).
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
        meta_stream: bool = True,
        meta_list_dirs: bool = True,
        meta_list_after: int = 2,
        meta_max_entries: int = 200_000,
        meta_max_bytes: int = 128 << 20,
        fast_pinned_budget: int = 64 << 20,
        fast_idle_timeout: float = 60.0,
        fast_max_conns: int = 128,
    ) -> None:
        if transport not in ("auto", "tcp", "verbs", "http"):
            raise ValueError(f"transport must be auto, tcp, verbs or http, not {transport!r}")
        if fast_busy_poll_us < 0:
            raise ValueError(f"fast_busy_poll_us must be >= 0, not {fast_busy_poll_us}")
        config = ClientConfig(
            filer=filer, sidecar=sidecar, transport=transport, master=master,
            jwt_key=jwt_key, timeout=timeout, meta_ttl=meta_ttl, max_workers=max_workers,
            fast_timeout=fast_timeout, fast_max_inflight=fast_max_inflight,
            fallback=fallback, verify=verify, fast_connect_timeout=fast_connect_timeout,
            fast_verbs_slot_size=fast_verbs_slot_size, fast_verbs_slots=fast_verbs_slots,
            fast_busy_poll_us=fast_busy_poll_us, meta_stream=meta_stream,
            meta_list_dirs=meta_list_dirs, meta_list_after=meta_list_after,
            meta_max_entries=meta_max_entries,
            meta_max_bytes=meta_max_bytes, fast_pinned_budget=fast_pinned_budget,
            fast_idle_timeout=fast_idle_timeout, fast_max_conns=fast_max_conns)
        if config.master is None:
            # Found once: a forked or unpickled copy reuses the answer.
            config = dataclasses.replace(config, master=discover_master(filer, timeout))
        self._start(config)

    def _start(self, config: ClientConfig) -> None:
        self.config = config
        """The settings this client was made with (what pickling carries)."""
        self.transport = config.transport
        self.sidecar = config.sidecar
        self._closed = False
        self._lock = threading.Lock()
        self._resume = False  # a metadata stream paused by a fork, to take up after it
        self._parts: _Parts | None = _Parts(config)
        self._pid = os.getpid()
        process.register(self)

    # -- processes ---------------------------------------------------------------------

    def _live(self) -> _Parts:
        """This process's parts: the ones built here, or new ones after a fork (a closed
        client keeps its own for ``stats()``, and builds none)."""
        parts = self._parts
        if parts is not None and self._pid == os.getpid():
            return parts
        with self._lock:
            if self._pid != os.getpid():  # forked without the at-fork hook
                self._abandon_after_fork()
            if self._parts is None:
                if self._closed:
                    raise ClientClosed("this seaweed_rdma.Client is closed")
                log.debug("client for %s: new connections in process %d", self.config.filer,
                          os.getpid())
                self._parts = _Parts(self.config)
                self._pid = os.getpid()
            return self._parts

    def _pause_for_fork(self) -> None:
        parts = self._parts
        self._resume = parts is not None and self._pid == os.getpid() \
            and parts.pause_for_fork()

    def _resume_after_fork(self) -> None:
        parts = self._parts
        if self._resume and parts is not None:
            parts.resume_after_fork()
        self._resume = False

    def _abandon_after_fork(self) -> None:
        """In a forked child: the parent's connections, engine, threads and locks are
        left untouched (see ``process``); the next call builds this process's own."""
        if self._parts is not None:
            process.abandon(self._parts)
        self._parts = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # Configuration only: the copy builds its own engine and connections.
        return (_from_config, (self.config,))

    @property
    def reader(self) -> ReadPath:
        """The read path this client, its file objects, fsspec and the mount all use."""
        return self._live().reader

    @property
    def filer(self) -> FilerClient:
        """The filer's HTTP API as this client uses it."""
        return self._live().filer

    @property
    def master(self) -> MasterClient:
        """The master's HTTP API (volume look-ups) as this client uses it."""
        return self._live().master

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Releases the engine (its threads, sidecar connections and eventfds), the HTTP
        connections and the worker threads. Idempotent; later calls raise ``ClientClosed``.
        In a forked child it releases only what the child built."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            parts = self._parts if self._pid == os.getpid() else None
        if parts is not None:
            parts.close()

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
        """The filer entry at ``path`` (held: see the class docs)."""
        return self._cached(path)[0]

    def _cached(self, path: str) -> tuple[Entry, FileView | None]:
        self._check_open()
        return self._live().meta.get(normalize_path(path))

    def view(self, path: str) -> FileView:
        """``path`` planned for reading (cached with its entry for ``meta_ttl``); pass it to
        ``reader`` methods to read the same version many times."""
        return self._planned(*self._cached(path))

    def _planned(self, entry: Entry, view: FileView | None) -> FileView:
        """``entry``'s view: the one held with it, or planned now and held."""
        if view is None:
            if entry.is_dir:
                raise IsADirectory(f"{entry.path}: is a directory")
            view = self.reader.view(entry)
            self._live().meta.attach(entry, view)
        return view

    def remember(self, entry: Entry) -> None:
        """Caches an entry learnt elsewhere (a directory listing) for ``meta_ttl``."""
        self._live().meta.remember(entry)

    def invalidate(self, path: str | None = None, subtree: bool = True) -> None:
        """Drops cached metadata for ``path`` (or everything); with ``subtree=False``
        only the entry itself (its own attributes changed; what is under it did not)."""
        self._live().meta.drop(None if path is None else normalize_path(path), subtree)

    def fetch_entries_with(self, fetch: Callable[[str], Entry]) -> None:
        """Fetches single filer entries with ``fetch(path)`` (raising ``NotFound``) instead
        of the filer's HTTP API, for this process's parts (a forked child goes back to
        HTTP). The mount passes its gRPC lookup."""
        self._live().meta.fetch_with(fetch)

    def held_generation(self, path: str) -> int:
        """Moves whenever what is held of ``path`` is dropped (an event, ``invalidate``):
        a caller compares it before and after a change it makes to know whether anything
        else was announced meanwhile."""
        self._check_open()
        return self._live().meta.generation(normalize_path(path))

    def held(self, path: str) -> tuple[Entry, FileView | None] | None:
        """The entry at ``path`` and its planned view (or None) if held and fresh, without
        asking the filer: None when it is not held (``entry`` would then fetch it)."""
        self._check_open()
        return self._live().meta.peek(normalize_path(path))

    def held_listing(self, path: str) -> list[Entry] | None:
        """The entries of directory ``path`` if held whole and fresh (see ``held``), else
        None; never asks the filer."""
        self._check_open()
        return self._live().meta.held_listing(normalize_path(path))

    def stream_state(self, up: bool) -> None:
        """For a client made with ``meta_stream=False`` whose holder follows the filer's
        events itself (the mount) and drops what they change: whether that stream is up.
        While it is, held entries stay until dropped; while not, they expire after
        ``meta_ttl``."""
        self._live().meta.stream_state(up)

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
        return self._live().meta.listdir(normalize_path(path))

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
        raw = SeaweedRawFile(self, normalize_path(path), self.view(path))
        return SeaweedFile(raw, buffer_size=buffering)

    def read_many(self, paths: list[str], *, on_error: str = "return"
                  ) -> list[bytes | BaseException]:
        """Many whole files at once, in ``paths``' order: their extents go to the sidecars
        in one batch (many requests in flight per connection, the GIL released once)
        rather than one round trip per file. A file that cannot be read (absent, a
        directory, unreachable) gives its exception in its place and the others still
        arrive; ``on_error="raise"`` raises the first such exception instead."""
        return self._many(paths, None, on_error)

    def readinto_many(self, paths: list[str], buffers: list[Any], *,
                      on_error: str = "return") -> list[int | BaseException]:
        """``readinto`` for many files at once (from offset 0, one buffer each, any writable
        contiguous buffer), as ``read_many`` reads them; each result is the byte count
        (short when the file is) or the file's exception."""
        if len(paths) != len(buffers):
            raise ValueError("paths and buffers must have the same length")
        views = [memoryview(b).cast("B") for b in buffers]
        got = self._many(paths, [len(v) for v in views], on_error)
        out: list[int | BaseException] = []
        for view, data in zip(views, got):
            if isinstance(data, BaseException):
                out.append(data)
            else:
                view[:len(data)] = data
                out.append(len(data))
        return out

    def _many(self, paths: list[str], limits: list[int] | None, on_error: str
              ) -> list[bytes | BaseException]:
        if on_error not in ("return", "raise"):
            raise ValueError(f"on_error must be 'return' or 'raise', not {on_error!r}")
        self._check_open()

        def plan(path: str) -> FileView | BaseException:
            try:
                return self.view(path)
            except (SeaweedRdmaError, ValueError, OSError) as e:
                return e

        def plan_held(held: tuple[Entry, FileView | None]) -> FileView | BaseException:
            try:
                return self._planned(*held)
            except (SeaweedRdmaError, ValueError, OSError) as e:
                return e

        parts = self._live()
        normal: list[str | ValueError] = []
        for p in paths:
            try:
                normal.append(normalize_path(p))
            except ValueError as e:
                normal.append(e)
        # Directories with several of these paths are listed once each, together; held
        # entries then plan on this thread, and only the rest wait for the filer.
        parts.meta.prefetch([n for n in normal if isinstance(n, str)], parts.executor.map)
        views: list[FileView | BaseException | None] = []
        for n in normal:
            held = parts.meta.peek(n) if isinstance(n, str) else None
            views.append(n if isinstance(n, ValueError)
                         else None if held is None else plan_held(held))
        missing = [i for i, v in enumerate(views) if v is None]
        for i, v in zip(missing, parts.executor.map(plan, [paths[i] for i in missing])):
            views[i] = v
        out = read_views(parts.reader, [v for v in views if v is not None], limits)
        if on_error == "raise":
            for r in out:
                if isinstance(r, BaseException):
                    raise r
        return out

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
        parts = self._live()
        snap = parts.stats.snapshot()
        snap["pid"] = os.getpid()
        fast = parts.reader.fast
        snap["transport"] = fast.transport if fast is not None else "http"
        snap["metadata"] = parts.meta.stats()
        if parts.stream is not None:
            snap["metadata"]["stream"] = parts.stream.stats()
        if fast is not None:
            snap["sidecars"] = fast.health()
            snap["engine"] = dict(fast.engine.stats())
            snap["engine"]["closed"] = fast.engine.closed
        return snap
