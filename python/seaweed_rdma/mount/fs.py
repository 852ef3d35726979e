"""The FUSE operations of the mount, which reads and writes a filer directory tree: a
thin driver (``SeaweedOperations``) over the owners of the mount's state.

Each operation checks and decodes its arguments, calls the owners and the change logic
below, and maps errors to errnos (``fuse_errors``). The owners, each of one piece of state:

- inode numbers: ``inodes.InodeTable``;
- the tree of names (pending and listed names, renames followed, directory times):
  ``tree.Tree``;
- held metadata (the filer entries kept between calls): the Client's
  ``held.HeldMetadata``, reached through ``Client.entry``/``invalidate``;
- handle state (open handles, their readers and writers, files unlinked while open, native
  registrations): ``handle_table.HandleTable``;
- cached file blocks: ``blocks.BlockCache``.

The change logic owns no state: ``file_changes.FileChanges`` (create, write, flush,
setattr, xattrs, fallocate: pyfuse3 has no such operation, ``fallocate_op`` sets one into
libfuse), ``name_changes.NameChanges`` (mkdir ... rename) and, for other clients'
changes, ``events.MetaEvents`` (fed by ``metastream.MetaStream``). Metadata is held for
``-cacheMetaTtlSec`` (also the kernel's entry/attr timeout) unless an event drops it
sooner; reads go through the Client's read path (fast path first, per-extent HTTP
fallback). Filer and engine calls run off the trio thread (``calls.FilerCalls``).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import random
import stat
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pyfuse3
import trio

from ..client import Client
from ..errors import SeaweedRdmaError
from ..filer import Entry
from ..filer_grpc import FilerGrpc, RetryPolicy, split_path
from ..reader import FileView
from .blocks import BlockCache
from .calls import FilerCalls
from .events import MetaEvents
from .fallocate_op import Fallocate, install
from .file_changes import XATTR_PREFIX, FileChanges
from .flags import MountOptions
from .handle_table import HandleTable
from .inodes import InodeTable
from .name_changes import NameChanges
from .names import check_length
from .native import NativeLoop, lookup_entry
from .offers_ahead import OffersAhead
from .tree import Tree
from .uploads import WriteMount, WriteOptions

log = logging.getLogger("seaweed_rdma.mount")
T = TypeVar("T")
if TYPE_CHECKING:  # typing.ParamSpec is 3.10+; P appears in annotations only
    from typing import ParamSpec

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


class SeaweedOperations(pyfuse3.Operations):
    """pyfuse3 operations over a ``Client``: the driver (see the module docs)."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, client: Client, opts: MountOptions) -> None:
        super().__init__()
        self.client = client
        self.opts = opts
        self.ttl = float(opts.cache_meta_ttl_sec)
        self.nursery: trio.Nursery | None = None  # the session's, for reads
        self.native: NativeLoop | None = None  # set once the session is mounted
        self.fallocate_op: Fallocate | None = None  # set once the session is made
        self._statfs: tuple[int, int, int] = (0, 0, 0)
        self._statfs_at = -STATFS_TTL_S
        # Our own requests carry this signature, so the filer's events for them are skipped.
        signature = random.randint(1, 2**31 - 1)
        self.grpc = FilerGrpc(opts.filer, signature=signature,
                              retry=RetryPolicy(deadline_s=max(0.0, opts.filer_retry_sec)))
        self.calls = FilerCalls(self.grpc, opts.concurrent_readers)
        # A single entry by gRPC: 0.9 ms against 2.4 for the filer's HTTP metadata GET (a
        # stat after a rename here, a name dropped by a change here).
        client.fetch_entries_with(self.grpc.entry)
        self.inodes = InodeTable(opts.filer_path)
        self.cache = BlockCache(opts.cache_capacity_mb << 20)
        self.handles = HandleTable(client, self.calls, self.cache, opts.readahead_mib << 20)
        self.tree = Tree(client, self.cache, self.inodes, self.handles, self.grpc,
                         self.calls, self.ttl)
        self.wm: WriteMount | None = None
        if not opts.read_only:
            self.wm = WriteMount(self.grpc, WriteOptions(
                chunk_size=max(1, opts.chunk_size_limit_mb) << 20,
                concurrent_writers=max(1, opts.concurrent_writers),
                collection=opts.collection, replication=opts.replication,
                ttl_sec=opts.ttl_sec, disk_type=opts.disk_type,
                data_center=opts.data_center), self.tree.committed_here)
        self.files = FileChanges(self.grpc, self.calls, self.inodes, self.tree, self.handles,
                                 self.wm, opts.ttl_sec)
        self.names = NameChanges(self.grpc, self.calls, client, self.inodes, self.tree,
                                 self.handles, self.wm, signature, opts.ttl_sec)
        self.events = MetaEvents(opts.filer, self.inodes.path(pyfuse3.ROOT_INODE),
                                 signature, client, self.inodes, self.tree, self.handles)
        self.ahead = OffersAhead(client, self.inodes, self.handles, self._offer,
                                 self._forget)

    def attach_native(self, native: NativeLoop | None) -> None:
        """The native loop, once the session is mounted (None: it does not run)."""
        self.native = native
        self.handles.attach_native(native)
        self.ahead.attach_native(native)

    def attach_fallocate(self) -> None:
        """Sets ``fallocate`` into the libfuse session ``pyfuse3.init`` made (pyfuse3 has
        no such operation; see ``fallocate_op``)."""
        self.fallocate_op = install(self.fallocate, lambda: self.nursery)

    async def background(self) -> None:
        """Runs for the life of the mount: the metadata subscription, and the nursery in
        which uploads, directory time writes and the work after events run. Closes the
        write side's connections when cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                if self.wm is not None:
                    self.wm.run_in(nursery)
                self.tree.dir_times.run_in(nursery)
                await self.events.follow(nursery)
        finally:
            if self.wm is not None:
                self.wm.close()
            self.grpc.close()

    async def _fetch(self, view: FileView, offset: int, buf: memoryview) -> int:
        """Fills ``buf`` from ``offset``. Plain extents go to the engine and come back
        through an eventfd (no thread hop); whole chunks and fallbacks run in a thread."""
        return await self.client.reader.readinto_async(view, buf, offset,
                                                        self.calls.off_loop)

    def stats(self) -> dict[str, Any]:
        """The mount's own state, for the ``user.seaweed_rdma.stats`` xattr of its root."""
        writes: dict[str, Any] = {"writers": len(self.handles.writers())}
        if self.wm is not None:
            writes.update(self.wm.stats())
        writes.update(self.events.stats())
        writes["setattr_stored"] = self.tree.stored_used
        return {
            "inodes": len(self.inodes),
            **self.ahead.counts,
            **self.handles.stats(),
            "cache_blocks": len(self.cache),
            "cache_bytes": self.cache.used,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "client": self.client.stats(),
            "writes": writes,
            "native_reads": self.native.stats() if self.native is not None else None,
            "native_read_ahead": (self.native.read_ahead_stats() if self.native is not None
                                  else None),
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
            entry = await self.tree.entry(parent)
            return self.tree.attributes(entry, self.inodes.ref(parent))
        path = self.inodes.child(parent_inode, text)
        entry = await self.tree.entry(path)
        inode = self._bind(entry, path)
        if self._offer(path, inode):  # its directory's other files too, ahead of lookups
            self.ahead.start(self.inodes.path(parent_inode), self.nursery)
        return self.tree.attributes(entry, self.inodes.ref(path))

    def _offer(self, path: str, inode: int) -> bool:
        """Lets the native loop answer the LOOKUPs and OPENs of ``path``'s file when its
        entry is held (planned now if it is not yet: without manifest chunks that is no
        filer call), so that even the first OPEN of a small file costs the Python
        operations nothing. Whether it is offered now."""
        if not self.handles.offers_native:
            return False  # (stream down: a held entry may expire, and planning would fetch)
        if self.inodes.find(path) != inode:
            return False  # renamed while the caller waited: the entry is another file's
        held = self.client.held(path)
        if held is None or not stat.S_ISREG(held[0].mode):
            return False
        entry, view = held
        try:
            if view is None:
                if any(c.is_chunk_manifest for c in entry.chunks):
                    return False  # resolving it reads the manifest: the first open does
                view = self.client.view(path)  # held: planned here, no filer call
            directory, name = split_path(path)
            parent = self.inodes.find(directory)
            lookup = (lookup_entry(parent, name, self.tree.attributes(entry, inode))
                      if parent is not None else None)
            return self.handles.offer_native(path, inode, entry, view, lookup)
        except (SeaweedRdmaError, OSError, ValueError) as e:
            # A lookup never fails for this: the open plans it again, and says why.
            log.info("not opened natively: %s: %s", path, e)
            return False

    def _bind(self, entry: Entry, path: str) -> int:
        """The inode of ``path`` (one for all names of a hard-linked file)."""
        if entry.hard_link_id and entry.nlink > 1:
            return self.inodes.hard_link(path, entry.hard_link_id)
        return self.inodes.inode(path)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, nlookup in inode_list:
            self._forget(inode, nlookup)

    def _forget(self, inode: int, nlookup: int) -> bool:
        """Gives back ``nlookup`` kernel references to ``inode``, counting first those the
        native loop's LOOKUPs gave (its offer withdrawn before, so that it hands out no
        number this side may drop); True when the number was dropped."""
        if self.native is not None:
            self.handles.withdraw_native(inode)
            self.inodes.add_refs(inode, self.native.take_lookups(inode))
        if self.inodes.forget(inode, nlookup):
            self.handles.inode_forgotten(inode)
            return True
        return False

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self.tree.inode_attributes(inode)

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        entry = await self.tree.entry(self.inodes.path(inode))
        if not entry.is_symlink:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(entry.symlink_target)

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if inode == pyfuse3.ROOT_INODE and name == STATS_XATTR:
            return json.dumps(self.stats()).encode()
        key = XATTR_PREFIX + name.decode("utf-8", "replace")
        w = self.handles.writer(inode)
        if w is not None:  # being written here: no filer call (the kernel asks for
            value = w.xattr(key)  # security.capability before every write)
        else:
            value = (await self.tree.entry(self.inodes.path(inode))).extended.get(key)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        entry = await self.tree.entry(self.inodes.path(inode))
        return [os.fsencode(k[len(XATTR_PREFIX):]) for k in entry.extended
                if k.startswith(XATTR_PREFIX)]

    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        """The cluster's capacity, from the filer's ``Statistics`` (asked at most every
        ``STATFS_TTL_S``; until the first answer, or if the filer has none, a large one)."""
        now = trio.current_time()
        if now - self._statfs_at > STATFS_TTL_S:
            self._statfs_at = now
            try:
                self._statfs = await self.calls.off_loop(
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
        entries = await self.calls.riding(self.client.scandir, self.inodes.path(inode))
        return self.handles.open_dir(sorted((os.fsencode(e.name), e) for e in entries))

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.handles.listing(fh)
        for index in range(start_id, len(listing)):
            name, entry = listing[index]
            inode = self._bind(entry, entry.path)
            self.client.remember(entry)
            # An entry the kernel took counts one lookup (readdirplus), like lookup().
            attrs = self.tree.attributes(entry, inode)
            if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                self._forget(inode, 0)  # drops it if nothing else refers to it
                return
            self.inodes.ref(entry.path)

    async def releasedir(self, fh: int) -> None:
        self.handles.release_dir(fh)

    # -- files ---------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & WRITE_FLAGS:
            return await self.files.open(inode, flags)
        path = self.inodes.path(inode)
        held = self.client.held(path)  # a held, planned file opens with no thread hop
        if held is not None and held[1] is not None:
            view = held[1]
        else:
            view = await self.calls.riding(self.client.view, path)
        fh = self.handles.open_read(path, inode, view)
        await self.handles.register_native(fh, inode, view)
        keep = self.handles.keep_cache(inode, view.entry.mtime_ns)
        now = self.client.held(path)
        if now is not None and now[1] is view:  # still the version this handle opened
            self._offer(path, inode)  # the next OPEN can be the native loop's
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=False)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
        h = self.handles.adopt_native(fh)  # (a handle the native loop opened: ours now)
        w = self.handles.writer(h.inode) if h is not None else None
        if w is not None:  # written here and not yet closed: dirty bytes included
            return memoryview(await w.read(off, size, self.client.reader))
        if h is None or h.reader is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        assert self.nursery is not None
        return await h.reader.read(off, size, self._fetch, self.nursery)

    async def release(self, fh: int) -> None:
        h = self.handles.release(fh)
        if h is None:
            return
        if h.writes:
            await self.files.release(h.inode)
        await self.names.reap_if_closed(h.inode)

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any = None) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        return await self.files.create(parent_inode, name, mode, flags, ctx)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.files.write(fh, off, buf)

    @fuse_errors
    async def fallocate(self, inode: int, fh: int | None, mode: int, offset: int,
                        length: int) -> None:
        """Not a pyfuse3 operation: libfuse calls it through ``fallocate_op``."""
        await self.files.fallocate(inode, fh, mode, offset, length)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        await self.files.flush(fh)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.files.flush(fh)

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None, ctx: Any = None
                      ) -> pyfuse3.EntryAttributes:
        return await self.files.setattr(inode, attr, fields)

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        await self.files.set_xattr(inode, name, value)

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        await self.files.set_xattr(inode, name, None)

    # -- names ---------------------------------------------------------------------------

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self.names.mknod(parent_inode, name, mode, rdev, ctx)

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
                    ) -> pyfuse3.EntryAttributes:
        return await self.names.mkdir(parent_inode, name, mode, ctx)

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
                      ) -> pyfuse3.EntryAttributes:
        return await self.names.symlink(parent_inode, name, target, ctx)

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
                   ) -> pyfuse3.EntryAttributes:
        return await self.names.link(inode, new_parent_inode, new_name)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        await self.names.unlink(parent_inode, name)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        await self.names.rmdir(parent_inode, name)

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any = None) -> None:
        await self.names.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)
