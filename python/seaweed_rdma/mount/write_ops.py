"""The FUSE operations that change the tree, as ``weed mount`` answers them.

A mixin of ``SeaweedOperations`` (fs.py), kept apart from the read side. Entries are
written through the filer's gRPC API (``CreateEntry``, ``UpdateEntry``, ``DeleteEntry``,
``AtomicRenameEntry``), file bytes through ``writes.FileWriter``; metadata events pushed
by the filer (``subscribe.MetaSubscriber``) drop what the mount and the kernel cached.
With ``-readOnly`` every handler here answers EROFS.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from ..filer_grpc import (
    PB,
    Conflict,
    FilerGrpc,
    RetryPolicy,
    chunk_fids,
    entry_from_pb,
    join_path,
    kind_of,
    posix_to_go_mode,
    split_path,
)
from .attrs import to_attributes
from .dir_times import DirTimes
from .handles import OpenFile
from .names import check_length, utf8_name, utf8_text
from .subscribe import MetaSubscriber
from .writes import FileWriter, WriteMount, WriteOptions

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..client import Client
    from .flags import MountOptions
    from .handles import BlockCache
    from .inodes import InodeTable
    from .native import NativeLoop

log = logging.getLogger("seaweed_rdma.mount")

XATTR_PREFIX = "xattr-"  # how weed mount stores user extended attributes in Extended
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_PERM_BITS = 0o777 | (1 << 23) | (1 << 22) | (1 << 20)  # rwx plus Go's setuid/setgid/sticky


def _existing_name(raw: bytes) -> str:
    """A name that must exist already: one that is not UTF-8 cannot (the filer stores
    only UTF-8), so it is ENOENT, with no log line."""
    check_length(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.ENOENT) from None


def _attribute_values(attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields
                      ) -> dict[str, int]:
    """The FuseAttributes values a setattr asks for (mode as Go permission bits)."""
    values: dict[str, int] = {}
    if fields.update_mode:
        values["file_mode"] = posix_to_go_mode(attr.st_mode)
    if fields.update_uid:
        values["uid"] = attr.st_uid
    if fields.update_gid:
        values["gid"] = attr.st_gid
    if fields.update_atime:
        values["atime"], values["atime_ns"] = divmod(attr.st_atime_ns, 1_000_000_000)
    if fields.update_mtime:
        values["mtime"], values["mtime_ns"] = divmod(attr.st_mtime_ns, 1_000_000_000)
    if fields.update_ctime:
        values["ctime"], values["ctime_ns"] = divmod(attr.st_ctime_ns, 1_000_000_000)
    return values


def to_orphan_attrs(entry: Any, inode: int, ops: Any) -> pyfuse3.EntryAttributes:
    """Attributes of a file unlinked while open (no name: link count 0)."""
    return to_attributes(entry, inode, float(ops.opts.cache_meta_ttl_sec))


def _now_pb(a: Any) -> None:
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    a.mtime, a.mtime_ns = sec, ns
    a.ctime, a.ctime_ns = sec, ns
    a.atime, a.atime_ns = sec, ns


class WriteHandlers:
    """Write-side handlers; ``SeaweedOperations`` inherits them (``self`` is one) and
    wraps each ``op_*`` in its FUSE handler, which maps errors to errnos."""

    # Provided by SeaweedOperations.
    client: Client
    opts: MountOptions
    inodes: InodeTable
    cache: BlockCache
    nursery: trio.Nursery | None
    _files: dict[int, OpenFile]
    native: NativeLoop | None

    if TYPE_CHECKING:
        async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        def _fh(self) -> int: ...
        def _attrs(self, entry: Any, inode: int) -> pyfuse3.EntryAttributes: ...
        async def _native_register(self, fh: int, inode: int, view: Any) -> None: ...

    def _init_writes(self) -> None:
        self.writers: dict[int, FileWriter] = {}
        self._write_fhs: dict[int, int] = {}  # write handle -> inode
        # Our own requests carry this signature, so the filer's events for them are skipped.
        self.signature = random.randint(1, 2**31 - 1)
        self.grpc: FilerGrpc | None = None
        self.wm: WriteMount | None = None
        self.subscriber: MetaSubscriber | None = None
        self.grpc = FilerGrpc(self.opts.filer, signature=self.signature,
                              retry=RetryPolicy(deadline_s=max(0.0, self.opts.filer_retry_sec)))
        self.subscriber = MetaSubscriber(self.grpc, self.inodes.path(pyfuse3.ROOT_INODE),
                                         time.time_ns(), self._on_meta_event,
                                         on_break=self._listed_clear)
        # Directories made here whose every name this mount knows (kept by our own changes
        # and dropped at any other client's change in them, or when the metadata stream
        # breaks): a name not in them is answered ENOENT without asking the filer, which
        # is what most lookups of a create are.
        self._listed: dict[str, set[str]] = {}
        # Files unlinked here while open (inode -> their last entry): readable and
        # writable through their handles until the last one closes (reap_if_closed).
        self._orphans: dict[int, Any] = {}
        self.dir_times = DirTimes(self.grpc, self._off_loop, self._forget_path)
        if not self.opts.read_only:
            o = self.opts
            self.wm = WriteMount(self.grpc, WriteOptions(
                chunk_size=max(1, o.chunk_size_limit_mb) << 20,
                concurrent_writers=max(1, o.concurrent_writers), collection=o.collection,
                replication=o.replication, ttl_sec=o.ttl_sec, disk_type=o.disk_type,
                data_center=o.data_center), self._on_commit)

    async def background(self) -> None:
        """Runs for the life of the mount: the metadata subscription, and the nursery in
        which uploads run. Closes the write side's connections when cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                if self.wm is not None:
                    self.wm.nursery = nursery
                self.dir_times.nursery = nursery
                if self.subscriber is not None:
                    nursery.start_soon(self.subscriber.run)
                await trio.sleep_forever()
        finally:
            if self.wm is not None:
                self.wm.close()
            if self.grpc is not None:
                self.grpc.close()

    def write_stats(self) -> dict[str, Any]:
        """Writers, uploads and subscription state, for the stats xattr."""
        out: dict[str, Any] = {"writers": len(self.writers)}
        if self.wm is not None:
            out.update(self.wm.stats())
        if self.subscriber is not None:
            out.update(self.subscriber.stats())
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _writable(self) -> WriteMount:
        if self.wm is None or self.grpc is None:
            raise pyfuse3.FUSEError(errno.EROFS)
        return self.wm

    def _new_entry(self, name: str, mode: int, ctx: Any, kind: str) -> Any:
        e = PB["Entry"](name=name, is_directory=kind == "dir")
        a = e.attributes
        # The kernel applied the caller's umask already; weed mount 4.48 applies no
        # -umask of its own on top, and neither does this mount (see flags.py).
        perm = mode & 0o7777 if kind != "symlink" else 0o777
        a.file_mode = posix_to_go_mode(perm, kind)
        a.uid, a.gid = (ctx.uid, ctx.gid) if ctx is not None else (os.getuid(), os.getgid())
        _now_pb(a)
        a.crtime, a.crtime_ns = a.mtime, a.mtime_ns
        if self.opts.ttl_sec and kind == "file":
            a.ttl_sec = self.opts.ttl_sec
        return e

    async def _lookup_pb(self, path: str) -> Any:
        assert self.grpc is not None
        pb = await self._off_loop(self.grpc.lookup, path)
        if pb is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return pb

    def _forget_path(self, path: str) -> None:
        """Drops what the mount cached about ``path`` (not the kernel's view)."""
        self.client.invalidate(path)
        self.cache.invalidate_path(path)

    def _writer(self, inode: int, path: str, pb: Any, created: bool = True) -> FileWriter:
        w = self.writers.get(inode)
        if w is None:
            w = self.writers[inode] = FileWriter(path, pb, self._writable(), created)
            if self.native is not None:  # reads of this file must now see its dirty bytes
                self.native.forget_inode(inode)
        return w

    def known_absent(self, path: str) -> bool:
        """True when ``path`` is surely not there: its directory was made here and no
        name of that directory has changed elsewhere since."""
        directory, name = split_path(path)
        names = self._listed.get(directory)
        return names is not None and name not in names

    def _listed_clear(self) -> None:
        self._listed.clear()

    def _listed_add(self, path: str) -> None:
        directory, name = split_path(path)
        names = self._listed.get(directory)
        if names is not None:
            names.add(name)

    def _listed_drop(self, path: str) -> None:
        """Forgets the names of ``path``'s directory, and of ``path`` and everything
        under it (it may be a directory)."""
        self._listed.pop(split_path(path)[0], None)
        prefix = path + "/"
        for d in [d for d in self._listed if d == path or d.startswith(prefix)]:
            del self._listed[d]

    def pending_entry(self, path: str) -> Any | None:
        """The entry of a file created here that the filer does not have yet (its first
        commit writes it), for lookups; None for every other path."""
        inode = self.inodes.find(path)
        w = self.writers.get(inode) if inode is not None else None
        if w is None or w.created or w.unlinked:
            return None
        return w.attributes_entry()

    def _on_commit(self, w: FileWriter) -> None:
        self._forget_path(w.path)

    async def _refresh_open_files(self, inode: int, path: str) -> None:
        """Gives read handles of ``inode`` the file's current version."""
        handles = [fh for fh, f in self._files.items() if f.inode == inode]
        if not handles:
            return
        try:
            view = await self._off_loop(self.client.view, path)
        except OSError:
            return
        refreshed = []
        for fh in handles:
            if fh in self._files:
                if self.native is not None:  # its chunk list is the old version's
                    self.native.forget(fh, inode)
                self._files[fh] = OpenFile(path, inode, view, self.opts.readahead_mib << 20,
                                           self.cache)
                refreshed.append(fh)
        for fh in refreshed:
            await self._native_register(fh, inode, view)

    def _kernel_forget(self, path: str, inode: int | None,
                       data: bool = True) -> None:
        """Tells the kernel that ``path`` changed: its name (and, with ``data``, the inode's
        attributes and pages). Runs in a worker thread, never from within a handler,
        since the kernel may wait for a request that is being handled."""
        directory, name = split_path(path)
        parent = self.inodes.find(directory)
        nursery = self.nursery

        def work() -> None:
            # OSError: the kernel did not know the name or inode, so nothing to drop.
            if parent is not None:
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_entry(parent, os.fsencode(name))
            if inode is not None:
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_inode(inode, not data)

        if nursery is not None:
            nursery.start_soon(trio.to_thread.run_sync, work)

    # -- metadata events -------------------------------------------------------------------

    def _on_meta_event(self, ev: Any) -> None:
        n = ev.event_notification
        if self.signature in n.signatures:
            return  # ours: already applied
        old = join_path(ev.directory, n.old_entry.name) if n.old_entry.name else None
        new = (join_path(n.new_parent_path or ev.directory, n.new_entry.name)
               if n.new_entry.name else None)
        for path in (old, new):  # a directory moved or went: every path under it
            if path is not None and (n.old_entry.is_directory or n.new_entry.is_directory):
                self.client.invalidate(path)
        if old is not None and new is not None and old != new:
            self._follow_rename(old, new)  # open files (and inodes) move with it
        for path in [p for p in (old, new) if p is not None]:
            self._listed_drop(path)
            self._forget_path(path)
            inode = self.inodes.find(path)
            w = self.writers.get(inode) if inode is not None else None
            if w is not None:
                if path == new:
                    w.remote_version(n.new_entry)  # its version is the base from now on
                elif new is None:
                    w.unlink()  # removed elsewhere: no commit brings it back
            self._kernel_forget(path, inode)
            if inode is not None and w is None and self.nursery is not None:
                self.nursery.start_soon(self._refresh_open_files, inode, path)

    def _follow_rename(self, old: str, new: str) -> None:
        """``old`` (a file, or a directory and all under it) is now ``new``: inode numbers,
        the writers of open files and the names this mount knows move with it. A writer
        of a file that the move replaced writes nowhere from now on. Called for renames
        made here and for those the filer announces."""
        moving, replaced = self.inodes.find(old), self.inodes.find(new)
        # (A directory's move is announced for it and for each entry under it: those come
        # here after their inodes moved already, and replace nothing.)
        if moving is not None and replaced not in (None, moving) and replaced in self.writers:
            self.writers[replaced].unlink()
        self._listed_remove(old)
        self._listed_add(new)
        self.inodes.rename(old, new)
        prefix = old + "/"
        for w in self.writers.values():
            if w.path == old:
                w.moved_to(new)
            elif w.path.startswith(prefix):
                w.moved_to(new + w.path[len(old):])

    # -- files -----------------------------------------------------------------------------

    async def op_create(self, parent_inode: int, name: bytes, mode: int,
                      flags: int, ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._writable()
        assert self.grpc is not None
        text = utf8_name(name, "create")
        path = self.inodes.child(parent_inode, text)
        pb = self._new_entry(text, mode, ctx, "file")
        # O_EXCL: the filer decides now, unless this mount knows every name of the
        # directory (made here, nothing changed elsewhere since: as weed mount answers
        # from its metadata cache); otherwise the first commit creates it, under the
        # filer's IF_NOT_EXISTS condition.
        exclusive = bool(flags & os.O_EXCL) and not self.known_absent(path)
        if exclusive:
            await self._off_loop(self.grpc.create, split_path(path)[0], pb, True)
        self._forget_path(path)
        self.inodes.detach(path)  # a new file: a new inode number
        self._listed_add(path)
        self.dir_times.touch_parent(path)
        inode = self.inodes.ref(path)
        w = self._writer(inode, path, pb, created=exclusive)
        w.assign_ahead()
        w.open_handle()
        fh = self._fh()
        self._write_fhs[fh] = inode
        return (pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False),
                self._attrs(entry_from_pb(pb, path), inode))

    async def op_open_write(self, inode: int, flags: int
                             ) -> pyfuse3.FileInfo:
        """``open`` with a write flag: the file's writer, shared by its write handles."""
        self._writable()
        path = self.inodes.path(inode)
        w = self.writers.get(inode)
        if w is None:
            pb = await self._lookup_pb(path)
            if pb.is_directory:
                raise pyfuse3.FUSEError(errno.EISDIR)
            w = self._writer(inode, path, pb)
        w.open_handle()
        fh = self._fh()
        self._write_fhs[fh] = inode
        if flags & os.O_TRUNC and w.size:
            try:
                await w.truncate(0)
                await w.commit()
            except BaseException:
                await self.op_release_write(fh)
                raise
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False)

    def writer_of_fh(self, fh: int) -> FileWriter | None:
        """The writer behind a write handle, if ``fh`` is one."""
        inode = self._write_fhs.get(fh)
        return self.writers.get(inode) if inode is not None else None

    async def op_write(self, fh: int, off: int, buf: bytes) -> int:
        w = self.writer_of_fh(fh)
        if w is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await w.write(off, buf)

    async def op_flush(self, fh: int) -> None:
        w = self.writer_of_fh(fh)
        if w is not None:
            await w.commit()

    async def op_fsync(self, fh: int, datasync: bool) -> None:
        await self.op_flush(fh)

    async def op_release_write(self, fh: int) -> None:
        """Ends a write handle; the last one commits and drops the file's writer."""
        inode = self._write_fhs.pop(fh, None)
        if inode is None:
            return
        w = self.writers.get(inode)
        if w is None or w.close_handle() > 0:
            return
        try:
            await w.commit()
        except Exception as e:  # reported by flush already (close returns EIO)
            log.warning("release of %s: %s", w.path, e)
        finally:
            if self.writers.get(inode) is w and w.handles == 0 and inode not in self._orphans:
                del self.writers[inode]
                self._forget_path(w.path)
                await self._refresh_open_files(inode, w.path)

    # -- attributes ------------------------------------------------------------------------

    async def op_setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                       fields: pyfuse3.SetattrFields) -> pyfuse3.EntryAttributes:
        wm = self._writable()
        assert self.grpc is not None
        path = self.inodes.path(inode)
        values = _attribute_values(attr, fields)
        w = self.writers.get(inode)
        orphan = self._orphans.get(inode)
        if orphan is not None and w is None:  # unlinked while open, read-only handles
            if fields.update_size:
                raise pyfuse3.FUSEError(errno.EBADF)
            for name, value in values.items():
                setattr(orphan.attributes, name, value)
            return to_orphan_attrs(self.orphan_entry(inode), inode, self)
        if w is None and not fields.update_size:
            # chmod, chown, utimens: the entry's attributes and ctime, nothing else (no
            # writer, the bytes and the mtime stay as they are).
            return await self._set_metadata(inode, path, values)
        temporary = w is None
        if w is None:
            pb = await self._lookup_pb(path)
            if pb.is_directory:
                raise pyfuse3.FUSEError(errno.EISDIR)
            w = FileWriter(path, pb, wm)
        if fields.update_size:
            await w.truncate(attr.st_size)
        if temporary or fields.update_size:
            await w.commit()
        if "file_mode" in values:
            mode = w.state.view().attributes.file_mode
            values["file_mode"] = (mode & ~_PERM_BITS) | values["file_mode"]
        if values:  # only what changed is laid on the filer's version (see entry_state)
            await w.change_attributes(values)
        self._forget_path(path)
        if orphan is not None:
            return to_orphan_attrs(self.orphan_entry(inode), inode, self)
        entry = w.attributes_entry()
        if temporary:
            entry = entry_from_pb(w.state.view(), path)
            entry.size = w.size
        return self._attrs(entry, inode)

    async def _set_metadata(self, inode: int, path: str, values: dict[str, int]
                            ) -> pyfuse3.EntryAttributes:
        """Sets attributes of an entry no writer holds, under the filer's condition that
        its chunks are still the ones read (another client's newer content is re-read)."""
        assert self.grpc is not None
        try:
            async with self.dir_times.guard(path):  # not undone by a directory time write
                return await self._set_metadata_now(inode, path, values)
        finally:
            self.dir_times.release_guard(path)

    async def _set_metadata_now(self, inode: int, path: str, values: dict[str, int]
                                ) -> pyfuse3.EntryAttributes:
        assert self.grpc is not None
        for _ in range(5):
            pb = await self._lookup_pb(path)
            a = pb.attributes
            for name, value in values.items():
                if name == "file_mode":
                    value = (a.file_mode & ~_PERM_BITS) | value
                setattr(a, name, value)
            if "ctime" not in values:
                a.ctime, a.ctime_ns = divmod(time.time_ns(), 1_000_000_000)
            if pb.is_directory and ("mtime" in values or "ctime" in values):
                self.dir_times.drop(path)  # times set explicitly win over ours
            try:
                await self._off_loop(self.grpc.update, split_path(path)[0], pb,
                                     chunk_fids(pb))
            except Conflict:
                continue
            self._forget_path(path)
            return self._attrs(entry_from_pb(pb, path), inode)
        raise pyfuse3.FUSEError(errno.EAGAIN)

    async def op_setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: Any = None) -> None:
        await self._set_extended(inode, XATTR_PREFIX + utf8_text(name, "setxattr"), value)

    async def op_removexattr(self, inode: int, name: bytes,
                          ctx: Any = None) -> None:
        await self._set_extended(inode, XATTR_PREFIX + utf8_text(name, "removexattr"), None)

    async def _set_extended(self, inode: int, key: str,
                            value: bytes | None) -> None:
        wm = self._writable()
        path = self.inodes.path(inode)
        w = self.writers.get(inode)
        try:
            async with self.dir_times.guard(path):  # not undone by a directory time write
                if w is None:
                    w = FileWriter(path, await self._lookup_pb(path), wm)
                if not await w.change_xattr(key, value):
                    raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        finally:
            self.dir_times.release_guard(path)
        self._forget_path(path)

    # -- names -----------------------------------------------------------------------------

    async def _make(self, parent_inode: int, name: bytes, pb: Any
                    ) -> pyfuse3.EntryAttributes:
        assert self.grpc is not None
        path = self.inodes.child(parent_inode, pb.name)
        await self._off_loop(self.grpc.create, split_path(path)[0], pb, True)
        self._forget_path(path)
        self.inodes.detach(path)
        self._listed_add(path)
        self.dir_times.touch_parent(path)
        if pb.is_directory:
            self._listed[path] = set()  # made just now: empty
        return self._attrs(entry_from_pb(pb, path), self.inodes.ref(path))

    async def op_mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        self._writable()
        return await self._make(parent_inode, name,
                                self._new_entry(utf8_name(name, "mkdir"), mode, ctx, "dir"))

    async def op_symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any = None) -> pyfuse3.EntryAttributes:
        self._writable()
        pb = self._new_entry(utf8_name(name, "symlink"), 0o777, ctx, "symlink")
        pb.attributes.symlink_target = utf8_text(target, "symlink target")
        return await self._make(parent_inode, name, pb)

    async def op_mknod(self, parent_inode: int, name: bytes, mode: int,
                    rdev: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        """Regular files, fifos, sockets and devices, stored as weed mount stores them: an
        entry with the kind in its mode and the device number in ``rdev``."""
        self._writable()
        kind = kind_of(mode)
        if kind in ("dir", "symlink"):
            raise pyfuse3.FUSEError(errno.EINVAL)
        pb = self._new_entry(utf8_name(name, "mknod"), mode, ctx, kind)
        if kind in ("char", "block"):
            pb.attributes.rdev = rdev & 0xFFFFFFFF
        return await self._make(parent_inode, name, pb)

    async def op_link(self, inode: int, new_parent_inode: int,
                   new_name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        """A hard link the filer's way: both entries carry one ``hard_link_id`` (16 random
        bytes and the 0x01 marker) and the link count; the filer keeps their shared
        content. The new name gets its own inode number here."""
        self._writable()
        assert self.grpc is not None
        old = self.inodes.path(inode)
        text = utf8_name(new_name, "link")
        new = self.inodes.child(new_parent_inode, text)
        w = self.writers.get(inode)
        if w is not None:
            await w.commit()  # the link shares what is written so far
        pb = await self._lookup_pb(old)
        if pb.is_directory:
            raise pyfuse3.FUSEError(errno.EPERM)
        fids = chunk_fids(pb)  # the update may not change chunks it did not read
        if not pb.hard_link_id:
            pb.hard_link_id = os.urandom(16) + b"\x01"
            pb.hard_link_counter = 1
        pb.hard_link_counter += 1
        pb.attributes.ctime, pb.attributes.ctime_ns = divmod(time.time_ns(), 1_000_000_000)
        await self._off_loop(self.grpc.update, split_path(old)[0], pb, fids)
        if w is not None:
            w.remote_version(pb)  # the link's id and count, same content
        twin = PB["Entry"]()
        twin.CopyFrom(pb)
        twin.name = text
        await self._off_loop(self.grpc.create, split_path(new)[0], twin, True)
        self.inodes.hard_link(old, bytes(pb.hard_link_id))
        self.inodes.detach(new)
        self.inodes.bind(new, inode)
        for name in self.inodes.names(inode):
            self._forget_path(name)  # every name's link count moved
        self._listed_add(new)
        self.dir_times.touch_parent(new)
        return self._attrs(entry_from_pb(twin, new), self.inodes.ref(new))

    async def op_unlink(self, parent_inode: int, name: bytes,
                     ctx: Any = None) -> None:
        self._writable()
        assert self.grpc is not None
        path = self.inodes.child(parent_inode, _existing_name(name))
        inode = self.inodes.find(path)
        if inode is not None and self._is_open(inode) and len(self.inodes.names(inode)) == 1:
            # Open here: POSIX keeps the file readable and writable through its handles
            # until the last one closes. The name goes now; the bytes when it closes.
            w = self.writers.get(inode)
            if w is not None:
                await w.commit()
            pb = await self._lookup_pb(path)
            if not pb.is_directory and pb.hard_link_counter <= 1:
                await self._off_loop(lambda: self.grpc.delete(path, delete_data=False))  # type: ignore[union-attr]
                self._orphans[inode] = pb
                self._gone(path)
                if w is not None:
                    w.keep_open_unlinked()
                return
        await self._off_loop(lambda: self.grpc.delete(path, delete_data=True))  # type: ignore[union-attr]
        self._gone(path)

    def _is_open(self, inode: int) -> bool:
        w = self.writers.get(inode)
        return (w is not None and w.handles > 0) or any(
            f.inode == inode for f in self._files.values())

    def orphan_entry(self, inode: int) -> Any | None:
        """The read-side entry of an open file that was unlinked here (link count 0), or
        None when ``inode`` is not one."""
        pb = self._orphans.get(inode)
        if pb is None:
            return None
        w = self.writers.get(inode)
        entry = w.attributes_entry() if w is not None else entry_from_pb(pb, pb.name)
        entry.nlink = 0
        return entry

    async def reap_if_closed(self, inode: int) -> None:
        """After a release: an unlinked file's bytes are deleted once its last handle is
        closed. The filer deletes chunks with the entry naming them, so the entry is put
        back under a hidden name and deleted with its data at once."""
        pb = self._orphans.get(inode)
        if pb is None or self._is_open(inode):
            return
        del self._orphans[inode]
        assert self.grpc is not None
        w = self.writers.pop(inode, None)
        tomb = PB["Entry"]()
        tomb.CopyFrom(w.state.view() if w is not None else pb)
        tomb.name = f".seaweed_rdma.unlinked.{self.signature}.{inode}"
        tomb.ClearField("hard_link_id")
        tomb.hard_link_counter = 0
        root = self.inodes.path(pyfuse3.ROOT_INODE)
        where = join_path(root, tomb.name)
        try:
            await self._off_loop(self.grpc.create, root, tomb, False)
            await self._off_loop(lambda: self.grpc.delete(where, delete_data=True))  # type: ignore[union-attr]
        except Exception as e:  # the bytes stay on the volumes until a filer cleanup
            log.warning("chunks of unlinked %s not deleted: %s", pb.name, e)

    async def op_rmdir(self, parent_inode: int, name: bytes,
                    ctx: Any = None) -> None:
        self._writable()
        assert self.grpc is not None
        path = self.inodes.child(parent_inode, _existing_name(name))
        prefix = path + "/"
        pending = any(w.path.startswith(prefix) and not w.created and not w.unlinked
                      for w in self.writers.values())  # files here the filer has not seen
        if pending or await self._off_loop(self.grpc.list, path, 1):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        async with self.dir_times.holding(path):  # no time write brings it back
            await self._off_loop(lambda: self.grpc.delete(path, delete_data=True))  # type: ignore[union-attr]
            self.dir_times.drop(path)
        self._gone(path)

    def _listed_remove(self, path: str) -> None:
        """``path`` went away here: out of its directory's names; names under it dropped."""
        names = self._listed.get(split_path(path)[0])
        if names is not None:
            names.discard(split_path(path)[1])
        prefix = path + "/"
        for d in [d for d in self._listed if d == path or d.startswith(prefix)]:
            del self._listed[d]

    def _gone(self, path: str) -> None:
        self._forget_path(path)
        self._listed_remove(path)
        self.dir_times.touch_parent(path)
        inode = self.inodes.find(path)
        if inode is None:
            return
        self.inodes.detach(path)
        others = [p for p in self.inodes.names(inode) if p != path]
        for other in others:  # a hard link: the other names' link count moved
            self._forget_path(other)
        w = self.writers.get(inode)
        if w is not None:
            if others and w.path == path:
                w.moved_to(self.inodes.path(inode))  # the file lives on under another name
            elif not others:
                w.unlink()  # its handles write nowhere now

    async def op_rename(self, parent_inode_old: int, name_old: bytes,
                     parent_inode_new: int, name_new: bytes, flags: int, ctx: Any = None
                     ) -> None:
        self._writable()
        assert self.grpc is not None
        old = self.inodes.child(parent_inode_old, _existing_name(name_old))
        new = self.inodes.child(parent_inode_new, utf8_name(name_new, "rename"))
        if flags & RENAME_EXCHANGE:
            await self._exchange(old, new)
            return
        # (A name this mount knows is free needs no lookup: a directory made here.)
        target = None if self.known_absent(new) else await self._off_loop(self.grpc.lookup, new)
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if target.is_directory and await self._off_loop(self.grpc.list, new, 1):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        # Bytes still buffered for files being moved go to the filer first, so the entry
        # that moves is the written one.
        await self._commit_under(old)
        async with self.dir_times.holding(old, new):  # no time write brings ``old`` back
            await self._off_loop(self.grpc.rename, old, new)
            self.dir_times.moved(old, new)
        self._forget_path(new)
        self._follow_rename(old, new)
        self.dir_times.touch_parent(old)
        self.dir_times.touch_parent(new)
        self.client.invalidate(old)  # it and every cached path under it (a directory)
        self.cache.invalidate_path(old)

    async def _commit_under(self, path: str) -> None:
        """Sends the bytes buffered for ``path`` and anything under it to the filer."""
        prefix = path + "/"
        for w in list(self.writers.values()):
            if w.path == path or w.path.startswith(prefix):
                await w.commit()

    async def _exchange(self, a: str, b: str) -> None:
        """``renameat2(RENAME_EXCHANGE)``: the filer has no exchange, so three renames
        through a hidden name in ``a``'s directory. Atomic for this mount's callers (the
        loop runs nothing else of theirs in between); other clients may see the hidden
        name, or ``a`` missing, for the few milliseconds it takes."""
        assert self.grpc is not None
        if await self._off_loop(self.grpc.lookup, b) is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        await self._commit_under(a)
        await self._commit_under(b)
        tmp = join_path(split_path(a)[0],
                        f".seaweed_rdma.exchange.{self.signature}.{random.getrandbits(32)}")
        for src, dst in ((a, tmp), (b, a), (tmp, b)):
            async with self.dir_times.holding(src, dst):
                await self._off_loop(self.grpc.rename, src, dst)
            self._follow_rename(src, dst)
            self.client.invalidate(src)
            self.client.invalidate(dst)
            self.cache.invalidate_path(src)
        for path in (a, b):
            self.dir_times.touch_parent(path)
