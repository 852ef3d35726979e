"""Names made, linked, removed and renamed through the mount, as ``weed mount`` makes them
(``NameChanges``); it owns no state of its own.

Entries are written with the filer's gRPC API (``CreateEntry``, ``UpdateEntry``,
``DeleteEntry``, ``AtomicRenameEntry``); then the tree (names, inodes, directory times)
and the handle table (writers, orphans) are told. Bytes buffered for a file go to the
filer before its name changes. With ``-readOnly`` every change answers EROFS.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

import pyfuse3

from ..filer_grpc import (
    PB,
    chunk_fids,
    entry_from_pb,
    join_path,
    kind_of,
    posix_to_go_mode,
    split_path,
)
from .names import check_length, utf8_name, utf8_text

if TYPE_CHECKING:
    from ..client import Client
    from ..filer_grpc import FilerGrpc
    from .calls import FilerCalls
    from .handle_table import HandleTable
    from .inodes import InodeTable
    from .tree import Tree
    from .uploads import WriteMount

log = logging.getLogger("seaweed_rdma.mount")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def writable(wm: WriteMount | None) -> WriteMount:
    """The write side, or ``FUSEError(EROFS)`` for a ``-readOnly`` mount."""
    if wm is None:
        raise pyfuse3.FUSEError(errno.EROFS)
    return wm


def existing_name(raw: bytes) -> str:
    """A name that must exist already: one that is not UTF-8 cannot (the filer stores
    only UTF-8), so it is ENOENT, with no log line."""
    check_length(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.ENOENT) from None


def now_pb(a: Any) -> None:
    """Sets the mtime, ctime and atime of protobuf attributes ``a`` to now."""
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    a.mtime, a.mtime_ns = sec, ns
    a.ctime, a.ctime_ns = sec, ns
    a.atime, a.atime_ns = sec, ns


def new_entry(name: str, mode: int, ctx: Any, kind: str, ttl_sec: int) -> Any:
    """A new protobuf entry of ``kind`` owned by the caller, times now."""
    e = PB["Entry"](name=name, is_directory=kind == "dir")
    a = e.attributes
    # The kernel applied the caller's umask already; weed mount 4.48 applies no
    # -umask of its own on top, and neither does this mount (see flags.py).
    perm = mode & 0o7777 if kind != "symlink" else 0o777
    a.file_mode = posix_to_go_mode(perm, kind)
    a.uid, a.gid = (ctx.uid, ctx.gid) if ctx is not None else (os.getuid(), os.getgid())
    now_pb(a)
    a.crtime, a.crtime_ns = a.mtime, a.mtime_ns
    if ttl_sec and kind == "file":
        a.ttl_sec = ttl_sec
    return e


class NameChanges:
    """mkdir, symlink, mknod, link, unlink, rmdir and rename (see the module docs)."""

    def __init__(self, grpc: FilerGrpc, calls: FilerCalls, client: Client,
                 inodes: InodeTable, tree: Tree, handles: HandleTable,
                 wm: WriteMount | None, signature: int, ttl_sec: int) -> None:
        self._grpc = grpc
        self._calls = calls
        self._client = client
        self._inodes = inodes
        self._tree = tree
        self._handles = handles
        self._wm = wm
        self._signature = signature
        self._ttl_sec = ttl_sec

    # -- names made ----------------------------------------------------------------------

    async def _make(self, parent_inode: int, pb: Any) -> pyfuse3.EntryAttributes:
        path = self._inodes.child(parent_inode, pb.name)
        generation = self._tree.generation(path)
        await self._calls.off_loop(self._grpc.create, split_path(path)[0], pb, True)
        announced = self._tree.generation(path) != generation  # changed elsewhere since
        self._tree.new_name(path, directory=pb.is_directory)
        if not announced:
            self._tree.hold(path, pb)  # a stat or a path walk through it asks no filer
        return self._tree.attributes(entry_from_pb(pb, path), self._inodes.ref(path))

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        writable(self._wm)
        return await self._make(parent_inode, new_entry(utf8_name(name, "mkdir"), mode, ctx,
                                                        "dir", self._ttl_sec))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        writable(self._wm)
        pb = new_entry(utf8_name(name, "symlink"), 0o777, ctx, "symlink", self._ttl_sec)
        pb.attributes.symlink_target = utf8_text(target, "symlink target")
        return await self._make(parent_inode, pb)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        """Regular files, fifos, sockets and devices, stored as weed mount stores them: an
        entry with the kind in its mode and the device number in ``rdev``."""
        writable(self._wm)
        kind = kind_of(mode)
        if kind in ("dir", "symlink"):
            raise pyfuse3.FUSEError(errno.EINVAL)
        pb = new_entry(utf8_name(name, "mknod"), mode, ctx, kind, self._ttl_sec)
        if kind in ("char", "block"):
            pb.attributes.rdev = rdev & 0xFFFFFFFF
        return await self._make(parent_inode, pb)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes
                   ) -> pyfuse3.EntryAttributes:
        """A hard link the filer's way: both entries carry one ``hard_link_id`` (16 random
        bytes and the 0x01 marker) and the link count; the filer keeps their shared
        content. The new name gets its own inode number here."""
        writable(self._wm)
        self._handles.withdraw_native(inode)  # two names from now on: never native again
        old = self._inodes.path(inode)
        text = utf8_name(new_name, "link")
        new = self._inodes.child(new_parent_inode, text)
        w = self._handles.writer(inode)
        if w is not None:
            await w.commit()  # the link shares what is written so far
        pb = await self._calls.lookup_pb(old)
        if pb.is_directory:
            raise pyfuse3.FUSEError(errno.EPERM)
        fids = chunk_fids(pb)  # the update may not change chunks it did not read
        if not pb.hard_link_id:
            pb.hard_link_id = os.urandom(16) + b"\x01"
            pb.hard_link_counter = 1
        pb.hard_link_counter += 1
        pb.attributes.ctime, pb.attributes.ctime_ns = divmod(time.time_ns(), 1_000_000_000)
        await self._calls.off_loop(self._grpc.update, split_path(old)[0], pb, fids)
        if w is not None:
            w.remote_version(pb)  # the link's id and count, same content
        twin = PB["Entry"]()
        twin.CopyFrom(pb)
        twin.name = text
        await self._calls.off_loop(self._grpc.create, split_path(new)[0], twin, True)
        self._inodes.hard_link(old, bytes(pb.hard_link_id))
        self._inodes.detach(new)
        self._inodes.bind(new, inode)
        for name in self._inodes.names(inode):
            self._tree.forget_path(name)  # every name's link count moved
        self._tree.linked(new)
        return self._tree.attributes(entry_from_pb(twin, new), self._inodes.ref(new))

    # -- names removed -------------------------------------------------------------------

    async def _delete(self, path: str, data: bool) -> None:
        await self._calls.off_loop(lambda: self._grpc.delete(path, delete_data=data))

    async def _has_entries(self, directory: str) -> bool:
        return bool(await self._calls.off_loop(self._grpc.list, directory, 1))

    async def unlink(self, parent_inode: int, name: bytes) -> None:
        writable(self._wm)
        path = self._inodes.child(parent_inode, existing_name(name))
        inode = self._inodes.find(path)
        self._handles.withdraw_native(inode)  # its native handles count as open below
        if inode is not None and self._handles.is_open(inode) \
                and len(self._inodes.names(inode)) == 1:
            # Open here: POSIX keeps the file readable and writable through its handles
            # until the last one closes. The name goes now; the bytes when it closes.
            w = self._handles.writer(inode)
            if w is not None:
                await w.commit()
            pb = await self._calls.lookup_pb(path)
            if not pb.is_directory and pb.hard_link_counter <= 1:
                await self._delete(path, data=False)
                self._handles.orphan(inode, pb)
                self._tree.gone(path)
                if w is not None:
                    w.keep_open_unlinked()
                return
        await self._delete(path, data=True)
        self._tree.gone(path)

    async def reap_if_closed(self, inode: int) -> None:
        """After a release: an unlinked file's bytes are deleted once its last handle is
        closed. The filer deletes chunks with the entry naming them, so the entry is put
        back under a hidden name and deleted with its data at once."""
        pb = self._handles.take_orphan(inode)
        if pb is None:
            return
        tomb = PB["Entry"]()
        tomb.CopyFrom(pb)
        tomb.name = f".seaweed_rdma.unlinked.{self._signature}.{inode}"
        tomb.ClearField("hard_link_id")
        tomb.hard_link_counter = 0
        root = self._inodes.path(pyfuse3.ROOT_INODE)
        try:
            await self._calls.off_loop(self._grpc.create, root, tomb, False)
            await self._delete(join_path(root, tomb.name), data=True)
        except Exception as e:  # the bytes stay on the volumes until a filer cleanup
            log.warning("chunks of unlinked %s not deleted: %s", pb.name, e)

    async def rmdir(self, parent_inode: int, name: bytes) -> None:
        writable(self._wm)
        path = self._inodes.child(parent_inode, existing_name(name))
        prefix = path + "/"
        pending = any(w.path.startswith(prefix) and not w.created and not w.unlinked
                      for w in self._handles.writers())  # files here the filer has not seen
        if pending or await self._has_entries(path):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        async with self._tree.dir_times.holding(path):  # no time write brings it back
            await self._delete(path, data=True)
            self._tree.dir_times.drop(path)
        self._tree.gone(path)

    # -- names moved ---------------------------------------------------------------------

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int) -> None:
        writable(self._wm)
        old = self._inodes.child(parent_inode_old, existing_name(name_old))
        new = self._inodes.child(parent_inode_new, utf8_name(name_new, "rename"))
        for path in (old, new):  # handles the native loop opened are this side's now
            self._handles.withdraw_native(self._inodes.find(path))
            self._handles.withdraw_native_under(path)
        if flags & RENAME_EXCHANGE:
            await self._exchange(old, new)
            return
        # (A name this mount knows is free needs no lookup: a directory made here.)
        target = (None if self._tree.known_absent(new)
                  else await self._calls.off_loop(self._grpc.lookup, new))
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if target.is_directory and await self._has_entries(new):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        # Bytes still buffered for files being moved go to the filer first, so the entry
        # that moves is the written one.
        await self._commit_under(old)
        dir_times = self._tree.dir_times
        async with dir_times.holding(old, new):  # no time write brings ``old`` back
            await self._calls.off_loop(self._grpc.rename, old, new)
            dir_times.moved(old, new)
        for path in (old, new):  # offered again while this waited: under the old names
            self._handles.withdraw_native(self._inodes.find(path))
        self._tree.forget_path(new)
        self._tree.follow_rename(old, new)
        dir_times.touch_parent(old)
        dir_times.touch_parent(new)
        self._tree.forget_path(old)  # it and every cached path under it (a directory)

    async def _commit_under(self, path: str) -> None:
        """Sends the bytes buffered for ``path`` and anything under it to the filer."""
        prefix = path + "/"
        for w in self._handles.writers():
            if w.path == path or w.path.startswith(prefix):
                await w.commit()

    async def _exchange(self, a: str, b: str) -> None:
        """``renameat2(RENAME_EXCHANGE)``: the filer has no exchange, so three renames
        through a hidden name in ``a``'s directory. Atomic for this mount's callers (the
        loop runs nothing else of theirs in between); other clients may see the hidden
        name, or ``a`` missing, for the few milliseconds it takes."""
        if await self._calls.off_loop(self._grpc.lookup, b) is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        await self._commit_under(a)
        await self._commit_under(b)
        tmp = join_path(split_path(a)[0],
                        f".seaweed_rdma.exchange.{self._signature}.{random.getrandbits(32)}")
        for src, dst in ((a, tmp), (b, a), (tmp, b)):
            async with self._tree.dir_times.holding(src, dst):
                await self._calls.off_loop(self._grpc.rename, src, dst)
            self._tree.follow_rename(src, dst)
            self._client.invalidate(dst)
            self._tree.forget_path(src)
        for path in (a, b):
            self._handles.withdraw_native(self._inodes.find(path))  # offered meanwhile
            self._tree.dir_times.touch_parent(path)
