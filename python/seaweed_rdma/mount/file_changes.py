"""Files written through the mount, as ``weed mount`` writes them (``FileChanges``): create,
open for writing, write, flush, release, and attribute and extended-attribute changes.
It owns no state of its own.

A file open for writing has one ``writes.FileWriter``, shared by its handles and kept by
the handle table; the last write handle's release commits it and drops it. A change of
attributes or extended attributes of a file with no writer goes through a short-lived one,
or (chmod, chown, utimens) straight to the filer under its condition that the chunks are
still those read. With ``-readOnly`` every change answers EROFS.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import pyfuse3

from ..filer_grpc import Conflict, chunk_fids, entry_from_pb, posix_to_go_mode, split_path
from .fallocate_op import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from .name_changes import new_entry, writable
from .names import utf8_name, utf8_text
from .writes import FileWriter

if TYPE_CHECKING:
    from ..filer_grpc import FilerGrpc
    from .calls import FilerCalls
    from .handle_table import HandleTable
    from .inodes import InodeTable
    from .tree import Tree
    from .uploads import WriteMount

log = logging.getLogger("seaweed_rdma.mount")

XATTR_PREFIX = "xattr-"  # how weed mount stores user extended attributes in Extended
_PERM_BITS = 0o777 | (1 << 23) | (1 << 22) | (1 << 20)  # rwx plus Go's setuid/setgid/sticky


def attribute_values(attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields
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


class FileChanges:
    """The write side of files (see the module docs)."""

    def __init__(self, grpc: FilerGrpc, calls: FilerCalls, inodes: InodeTable, tree: Tree,
                 handles: HandleTable, wm: WriteMount | None, ttl_sec: int) -> None:
        self._grpc = grpc
        self._calls = calls
        self._inodes = inodes
        self._tree = tree
        self._handles = handles
        self._wm = wm
        self._ttl_sec = ttl_sec

    def _writer(self, inode: int, path: str, pb: Any, created: bool = True) -> FileWriter:
        """The writer of ``inode``, made now (on ``pb``) if it has none."""
        w = self._handles.writer(inode)
        if w is None:
            w = FileWriter(path, pb, writable(self._wm), created)
            self._handles.add_writer(inode, w)
        return w

    # -- handles -------------------------------------------------------------------------

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        writable(self._wm)
        text = utf8_name(name, "create")
        path = self._inodes.child(parent_inode, text)
        pb = new_entry(text, mode, ctx, "file", self._ttl_sec)
        # O_EXCL: the filer decides now, unless this mount knows every name of the
        # directory (made here, nothing changed elsewhere since: as weed mount answers
        # from its metadata cache); otherwise the first commit creates it, under the
        # filer's IF_NOT_EXISTS condition.
        exclusive = bool(flags & os.O_EXCL) and not self._tree.known_absent(path)
        if exclusive:
            await self._calls.off_loop(self._grpc.create, split_path(path)[0], pb, True)
        self._tree.new_name(path)  # a new file: a new inode number
        inode = self._inodes.ref(path)
        w = self._writer(inode, path, pb, created=exclusive)
        w.assign_ahead()
        w.open_handle()
        fh = self._handles.open_write(inode)
        return (pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False),
                self._tree.written_attributes(w, inode))

    async def open(self, inode: int, flags: int) -> pyfuse3.FileInfo:
        """``open`` with a write flag: the file's writer, shared by its write handles."""
        writable(self._wm)
        path = self._inodes.path(inode)
        w = self._handles.writer(inode)
        if w is None:
            pb = await self._calls.lookup_pb(path)
            if pb.is_directory:
                raise pyfuse3.FUSEError(errno.EISDIR)
            w = self._writer(inode, path, pb)
        w.open_handle()
        fh = self._handles.open_write(inode)
        if flags & os.O_TRUNC and w.size:
            try:
                await w.truncate(0)
                await w.commit()
            except BaseException:
                self._handles.release(fh)
                await self.release(inode)
                raise
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False)

    def _writer_of(self, fh: int) -> FileWriter | None:
        h = self._handles.get(fh)
        return self._handles.writer(h.inode) if h is not None and h.writes else None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        w = self._writer_of(fh)
        if w is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await w.write(off, buf)

    async def fallocate(self, inode: int, fh: int | None, mode: int, offset: int,
                        length: int) -> None:
        """``fallocate``: mode 0 (``posix_fallocate``) grows the file, KEEP_SIZE alone
        changes nothing, PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE (with or without KEEP_SIZE)
        make the range read as zeros; the change is committed like a write. Other modes
        answer EOPNOTSUPP."""
        writable(self._wm)
        zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) \
                or zero == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE \
                or (mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise pyfuse3.FUSEError(errno.EINVAL)
        w = self._writer_of(fh) if fh is not None else self._handles.writer(inode)
        if w is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if zero:
            await w.zero_range(offset, length, keep_size=bool(mode & FALLOC_FL_KEEP_SIZE))
        elif not mode & FALLOC_FL_KEEP_SIZE:
            await w.allocate(offset + length)

    async def flush(self, fh: int) -> None:
        """Commits what the file's handles wrote (``flush`` and ``fsync``)."""
        w = self._writer_of(fh)
        if w is not None:
            await w.commit()

    async def release(self, inode: int) -> None:
        """A write handle of ``inode`` ended (the table has released it already); the last
        one commits and drops the file's writer."""
        w = self._handles.writer(inode)
        if w is None or w.close_handle() > 0:
            return
        try:
            await w.commit()
        except Exception as e:  # reported by flush already (close returns EIO)
            log.warning("release of %s: %s", w.path, e)
        finally:
            if self._handles.drop_writer(inode, w):
                self._tree.forget_path(w.path)
                self._tree.keep_stored(inode, w.path, w.stored_entry())
                await self._handles.refresh(inode, w.path)

    # -- attributes ----------------------------------------------------------------------

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields) -> pyfuse3.EntryAttributes:
        wm = writable(self._wm)
        self._handles.withdraw_native(inode)  # its native handles are ours before it changes
        path = self._inodes.path(inode)
        values = attribute_values(attr, fields)
        w = self._handles.writer(inode)
        orphan = self._handles.is_orphan(inode)
        if orphan and w is None:  # unlinked while open, read-only handles
            if fields.update_size:
                raise pyfuse3.FUSEError(errno.EBADF)
            self._handles.set_orphan_attributes(inode, values)
            return self._orphan_attributes(inode)
        if w is None and not fields.update_size:
            # chmod, chown, utimens: the entry's attributes and ctime, nothing else (no
            # writer, the bytes and the mtime stay as they are).
            return await self._set_metadata(inode, path, values)
        if w is not None and w.handles and not fields.update_size:
            # Of a file open for writing here (tar sets owner, times and mode before its
            # close): kept by the writer for its next commit. No filer call, and nothing
            # cached changes: the filer's version is still the one held.
            self._merge_mode(w, values)
            await w.change_attributes(values)
            return (self._orphan_attributes(inode) if orphan
                    else self._tree.written_attributes(w, inode))
        temporary = w is None
        if w is None:
            pb = await self._calls.lookup_pb(path)
            if pb.is_directory:
                raise pyfuse3.FUSEError(errno.EISDIR)
            w = FileWriter(path, pb, wm)
        if fields.update_size:
            await w.truncate(attr.st_size)
        if temporary or fields.update_size:
            await w.commit()
        self._merge_mode(w, values)
        if values:  # only what changed is laid on the filer's version (see entry_state)
            await w.change_attributes(values)
        self._tree.forget_path(path)
        if orphan:
            return self._orphan_attributes(inode)
        if not temporary:
            return self._tree.written_attributes(w, inode)
        entry = entry_from_pb(w.merged(), path)
        entry.size = w.size
        return self._tree.attributes(entry, inode)

    @staticmethod
    def _merge_mode(w: FileWriter, values: dict[str, int]) -> None:
        """A chmod keeps the file type bits of the entry as written."""
        if "file_mode" in values:
            mode = w.merged().attributes.file_mode
            values["file_mode"] = (mode & ~_PERM_BITS) | values["file_mode"]

    def _orphan_attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        attrs = self._tree.orphan_attributes(inode)
        assert attrs is not None
        return attrs

    async def _set_metadata(self, inode: int, path: str, values: dict[str, int]
                            ) -> pyfuse3.EntryAttributes:
        """Sets attributes of an entry no writer holds, under the filer's condition that
        its chunks are still the ones read (another client's newer content is re-read)."""
        dir_times = self._tree.dir_times
        try:
            async with dir_times.guard(path):  # not undone by a directory time write
                return await self._set_metadata_now(inode, path, values)
        finally:
            dir_times.release_guard(path)

    async def _set_metadata_now(self, inode: int, path: str, values: dict[str, int]
                                ) -> pyfuse3.EntryAttributes:
        for attempt in range(5):
            # Right after a close here the stored entry is at hand (a refusal re-reads).
            pb = self._tree.stored_entry(inode, path) if attempt == 0 else None
            if pb is None:
                pb = await self._calls.lookup_pb(path)
            a = pb.attributes
            for name, value in values.items():
                if name == "file_mode":
                    value = (a.file_mode & ~_PERM_BITS) | value
                setattr(a, name, value)
            if "ctime" not in values:
                a.ctime, a.ctime_ns = divmod(time.time_ns(), 1_000_000_000)
            if pb.is_directory and ("mtime" in values or "ctime" in values):
                self._tree.dir_times.drop(path)  # times set explicitly win over ours
            generation = self._tree.generation(path)
            try:
                await self._calls.off_loop(self._grpc.update, split_path(path)[0], pb,
                                           chunk_fids(pb))
            except Conflict:
                continue
            unseen = self._tree.generation(path) != generation  # an event meanwhile
            self._tree.forget_path(path)
            self._tree.keep_stored(inode, path, pb, hold=not unseen)
            return self._tree.attributes(entry_from_pb(pb, path), inode)
        raise pyfuse3.FUSEError(errno.EAGAIN)

    # -- extended attributes -------------------------------------------------------------

    async def set_xattr(self, inode: int, name: bytes, value: bytes | None) -> None:
        """Sets (or, with None, removes) extended attribute ``name``; ENOATTR when removing
        one that is not there."""
        wm = writable(self._wm)
        key = XATTR_PREFIX + utf8_text(name, "setxattr" if value is not None
                                       else "removexattr")
        path = self._inodes.path(inode)
        w = self._handles.writer(inode)
        dir_times = self._tree.dir_times
        try:
            async with dir_times.guard(path):  # not undone by a directory time write
                if w is None:
                    w = FileWriter(path, await self._calls.lookup_pb(path), wm)
                if not await w.change_xattr(key, value):
                    raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        finally:
            dir_times.release_guard(path)
        self._tree.forget_path(path)
