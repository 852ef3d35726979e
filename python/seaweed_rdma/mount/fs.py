"""The FUSE operations over a filer directory tree.

Metadata comes from the filer (cached for ``-cacheMetaTtlSec``, which is also the kernel's
entry/attr timeout); reads go through ``Client``'s read path (fast path first, per-extent
HTTP fallback). Filer and engine calls run off the trio thread, so the loop never blocks.
Every handler turns errors into a ``FUSEError`` with the matching errno. The handlers that
change the tree (and write file bytes) are implemented in ``write_ops`` (see there).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from ..client import Client
from ..errors import NotFound, SeaweedRdmaError, Unreachable
from ..filer import Entry
from ..reader import FileView
from .attrs import to_attributes
from .flags import MountOptions
from .handles import BlockCache, OpenFile
from .inodes import InodeTable
from .names import check_length
from .native import NativeLoop
from .write_ops import XATTR_PREFIX, WriteHandlers

log = logging.getLogger("seaweed_rdma.mount")
T = TypeVar("T")
P = ParamSpec("P")

STATS_XATTR = b"user.seaweed_rdma.stats"  # JSON of the mount's state, on its root only
STATFS_TTL_S = 10.0
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def fuse_errors(fn: Callable[P, Coroutine[Any, Any, T]]
                ) -> Callable[P, Coroutine[Any, Any, T]]:
    """Maps exceptions to FUSE errnos, logging what is not a plain "no such file"."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FileNotFoundError as e:
            raise pyfuse3.FUSEError(errno.ENOENT) from e
        except SeaweedRdmaError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from e
        except OSError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from e
        except Exception as e:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from e

    return wrapper


class SeaweedOperations(WriteHandlers, pyfuse3.Operations):
    """pyfuse3 operations over a ``Client``."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, client: Client, opts: MountOptions) -> None:
        super().__init__()
        self.client = client
        self.opts = opts
        self.ttl = float(opts.cache_meta_ttl_sec)
        self.inodes = InodeTable(opts.filer_path)
        self.nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(max(1, opts.concurrent_readers))
        self._files: dict[int, OpenFile] = {}
        # One registration with the native loop at a time per handle: two refreshes of one
        # file (the filer may announce a change twice) must not end with the older one's
        # chunk list registered, or with none.
        self._native_locks: dict[int, trio.Lock] = {}
        self._dirs: dict[int, list[tuple[bytes, Entry]]] = {}
        self._next_fh = 1
        self._open_mtime: dict[int, int] = {}
        self.cache = BlockCache(opts.cache_capacity_mb << 20)
        self.native: NativeLoop | None = None  # set once the session is mounted
        self._statfs: tuple[int, int, int] = (0, 0, 0)
        self._statfs_at = -STATFS_TTL_S
        self._init_writes()

    # -- helpers ---------------------------------------------------------------------

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args),
                                             limiter=self._limiter)

    async def _entry(self, path: str) -> Entry:
        pending = self.pending_entry(path)  # created here, on the filer at its first commit
        if pending is not None:
            return pending  # type: ignore[no-any-return]
        if self.known_absent(path):  # in a directory made here whose names are all known
            raise NotFound(f"{path}: no such file or directory")
        return await self._riding(self.client.entry, path)

    async def _riding(self, fn: Callable[..., T], *args: Any) -> T:
        """A filer call of the read side (HTTP), off the loop, waiting through a filer that
        is unreachable (restarting) for up to ``-filerRetrySec``, as the gRPC calls do."""
        assert self.grpc is not None
        pauses = self.grpc.retry.pauses()
        while True:
            try:
                out = await self._off_loop(fn, *args)
            except Unreachable as e:
                self.grpc.outage.down(str(e))
                pause = next(pauses, None)
                if pause is None:
                    raise
                await trio.sleep(pause)
                continue
            return out  # (maybe from a cache: only gRPC calls tell the outage is over)

    def _attrs(self, entry: Entry, inode: int) -> pyfuse3.EntryAttributes:
        w = self.writers.get(inode)
        if w is not None:  # being written here: its size and times as written
            entry = w.attributes_entry()
        elif entry.is_dir:
            entry = self.dir_times.apply(entry)
        return to_attributes(entry, inode, self.ttl)

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def _fetch(self, view: FileView, offset: int, buf: memoryview) -> int:
        """Fills ``buf`` from ``offset``. Plain extents go to the engine and come back
        through an eventfd (no thread hop); whole chunks and fallbacks run in a thread."""
        return await self.client.reader.readinto_async(view, buf, offset, self._off_loop)

    def stats(self) -> dict[str, Any]:
        """The mount's own state, for the ``user.seaweed_rdma.stats`` xattr of its root."""
        return {
            "inodes": len(self.inodes),
            "open_files": len(self._files),
            "open_dirs": len(self._dirs),
            "cache_blocks": len(self.cache),
            "cache_bytes": self.cache.used,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "client": self.client.stats(),
            "writes": self.write_stats(),
            "native_reads": self.native.stats() if self.native is not None else None,
        }

    # -- lookup and attributes ----------------------------------------------------------

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        check_length(name)  # every call that takes a path comes here first
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:  # the filer holds UTF-8 names only (see names.py)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        if text == ".":
            return await self.getattr(parent_inode)
        if text == "..":
            parent = self.inodes.path(parent_inode).rsplit("/", 1)[0] or "/"
            entry = await self._entry(parent)
            return self._attrs(entry, self.inodes.ref(parent))
        path = self.inodes.child(parent_inode, text)
        entry = await self._entry(path)
        self._bind(entry, path)
        return self._attrs(entry, self.inodes.ref(path))

    def _bind(self, entry: Entry, path: str) -> int:
        """The inode of ``path`` (one for all names of a hard-linked file)."""
        if entry.hard_link_id and entry.nlink > 1:
            return self.inodes.hard_link(path, entry.hard_link_id)
        return self.inodes.inode(path)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, nlookup in inode_list:
            if self.inodes.forget(inode, nlookup):
                self._open_mtime.pop(inode, None)

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        orphan = self.orphan_entry(inode)  # unlinked while open
        if orphan is not None:
            return to_attributes(orphan, inode, self.ttl)
        entry = await self._entry(self.inodes.path(inode))
        return self._attrs(entry, inode)

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        entry = await self._entry(self.inodes.path(inode))
        if not entry.is_symlink:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(entry.symlink_target)

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if inode == pyfuse3.ROOT_INODE and name == STATS_XATTR:
            return json.dumps(self.stats()).encode()
        key = XATTR_PREFIX + name.decode("utf-8", "replace")
        w = self.writers.get(inode)
        if w is not None:  # being written here: no filer call (the kernel asks for
            value = w.xattr(key)  # security.capability before every write)
        else:
            value = (await self._entry(self.inodes.path(inode))).extended.get(key)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        entry = await self._entry(self.inodes.path(inode))
        return [os.fsencode(k[len(XATTR_PREFIX):]) for k in entry.extended
                if k.startswith(XATTR_PREFIX)]

    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        """The cluster's capacity, from the filer's ``Statistics`` (asked at most every
        ``STATFS_TTL_S``; until the first answer, or if the filer has none, a large one)."""
        now = trio.current_time()
        if self.grpc is not None and now - self._statfs_at > STATFS_TTL_S:
            self._statfs_at = now
            try:
                self._statfs = await self._off_loop(
                    self.grpc.statistics, self.opts.collection, self.opts.replication,
                    self.opts.disk_type)
            except (SeaweedRdmaError, OSError) as e:
                log.info("statfs: %s", e)
        total, used, files = self._statfs
        block = 1 << 20
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = block
        if total <= 0:
            total = (1 << 30) * block  # the filer gave no capacity: unbounded
        s.f_blocks = total // block
        s.f_bfree = s.f_bavail = max(0, total - used) // block
        s.f_files = files + (1 << 30)
        s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s

    # -- directories -------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        path = self.inodes.path(inode)
        entries = await self._riding(self.client.scandir, path)
        fh = self._fh()
        self._dirs[fh] = sorted((os.fsencode(e.name), e) for e in entries)
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs.get(fh, [])
        for index in range(start_id, len(listing)):
            name, entry = listing[index]
            inode = self._bind(entry, entry.path)
            self.client.remember(entry)
            # An entry the kernel took counts one lookup (readdirplus), like lookup().
            if not pyfuse3.readdir_reply(token, name, self._attrs(entry, inode), index + 1):
                self.inodes.forget(inode, 0)  # drops it if nothing else refers to it
                return
            self.inodes.ref(entry.path)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # -- files ---------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & WRITE_FLAGS:
            return await self.op_open_write(inode, flags)
        path = self.inodes.path(inode)
        view = await self._riding(self.client.view, path)
        fh = self._fh()
        self._files[fh] = OpenFile(path, inode, view, self.opts.readahead_mib << 20,
                                   self.cache)
        await self._native_register(fh, inode, view)
        mtime = view.entry.mtime_ns
        keep = self._open_mtime.get(inode) == mtime
        self._open_mtime[inode] = mtime
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=False)

    async def _native_register(self, fh: int, inode: int, view: FileView) -> None:
        """Lets the native loop answer READs of ``fh`` from ``view``, unless by the time
        that is ready the handle has a newer view or the file is being written here."""
        native = self.native
        if native is None or inode in self.writers:
            return
        async with self._native_locks.setdefault(fh, trio.Lock()):
            if self._files.get(fh) is None:
                return  # released meanwhile
            await self._off_loop(native.load, fh, view)
            f = self._files.get(fh)
            if f is None or f.view is not view or inode in self.writers:
                native.forget(fh, inode)  # the Python operations answer this handle
            else:
                native.track(fh, inode)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
        f = self._files.get(fh)
        w = self.writers.get(f.inode if f is not None else self._write_fhs.get(fh, -1))
        if w is not None:  # written here and not yet closed: dirty bytes included
            return memoryview(await w.read(off, size, self.client.reader))
        if f is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        assert self.nursery is not None
        return await f.read(off, size, self._fetch, self.nursery)

    async def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        self._native_locks.pop(fh, None)
        if f is not None and self.native is not None:
            self.native.forget(fh, f.inode)
        inode = f.inode if f is not None else self._write_fhs.get(fh)
        await self.op_release_write(fh)
        if inode is not None:
            await self.reap_if_closed(inode)

    # -- writes (implemented in write_ops.WriteHandlers) ---------------------------------

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any = None) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        return await self.op_create(parent_inode, name, mode, flags, ctx)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.op_write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        await self.op_flush(fh)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.op_fsync(fh, datasync)

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None, ctx: Any = None
                      ) -> pyfuse3.EntryAttributes:
        return await self.op_setattr(inode, attr, fields)

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self.op_mknod(parent_inode, name, mode, rdev, ctx)

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
                    ) -> pyfuse3.EntryAttributes:
        return await self.op_mkdir(parent_inode, name, mode, ctx)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        await self.op_unlink(parent_inode, name, ctx)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        await self.op_rmdir(parent_inode, name, ctx)

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
                      ) -> pyfuse3.EntryAttributes:
        return await self.op_symlink(parent_inode, name, target, ctx)

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any = None) -> None:
        await self.op_rename(parent_inode_old, name_old, parent_inode_new, name_new, flags,
                             ctx)

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
                   ) -> pyfuse3.EntryAttributes:
        return await self.op_link(inode, new_parent_inode, new_name, ctx)

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        await self.op_setxattr(inode, name, value, ctx)

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        await self.op_removexattr(inode, name, ctx)
