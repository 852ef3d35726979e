"""Open handles: the one owner of the mount's handle state (``HandleTable``).

It holds, and nothing else changes:

- handle numbers, and for each open file handle a ``Handle``: the inode it is open on
  and, for a read handle, the block reader (``blocks.OpenFile``) of the version it reads;
- the open directory handles, each with the listing it was opened with;
- the writers (``writes.FileWriter``) of files open for writing here, one per inode and
  shared by all of its handles: every handle of such a file, read or write, reads through
  it, so dirty bytes are seen;
- files unlinked here while open ("orphans"): readable and writable through their handles
  until the last one closes, when ``take_orphan`` hands them over to be deleted;
- which read handles the native loop answers (one registration at a time per handle), and
  the mtime each inode was last opened at (the kernel keeps its pages when it is the same);
- which inodes the native loop may open itself (``offer_native``), and taking its handles
  over (``withdraw_native``, ``adopt_native``) before anything here changes such a file:
  from then on they are handles of this table like any other (orphans, refreshes,
  writers' dirty bytes and releases all see them).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING, Any

import trio

from ..filer_grpc import entry_from_pb
from .blocks import OpenFile

if TYPE_CHECKING:
    from ..client import Client
    from ..filer import Entry
    from ..reader import FileView
    from .blocks import BlockCache
    from .calls import FilerCalls
    from .native import LookupEntry, NativeLoop
    from .writes import FileWriter

Listing = list[tuple[bytes, "Entry"]]


class Handle:
    """One open file handle: its inode and, for a read handle, the block reader of the
    file's version it reads (None for a write handle). A read handle moves to a newer
    version of its file only through ``reread``."""

    def __init__(self, fh: int, inode: int, reader: OpenFile | None) -> None:
        self._fh = fh
        self._inode = inode
        self._reader = reader

    @property
    def fh(self) -> int:
        """The handle's number."""
        return self._fh

    @property
    def inode(self) -> int:
        """The inode the handle is open on."""
        return self._inode

    @property
    def reader(self) -> OpenFile | None:
        """The block reader of a read handle; None for a write handle."""
        return self._reader

    @property
    def writes(self) -> bool:
        """True for a handle opened for writing."""
        return self._reader is None

    def reread(self, reader: OpenFile) -> None:
        """A read handle reads ``reader``'s version of the file from now on."""
        assert self._reader is not None, "a write handle reads through its writer"
        self._reader = reader


class HandleTable:
    """The mount's open handles, writers and orphans (see the module docs)."""

    def __init__(self, client: Client, calls: FilerCalls, cache: BlockCache,
                 readahead: int) -> None:
        self._client = client
        self._calls = calls
        self._cache = cache
        self._readahead = readahead
        self._next_fh = 1
        self._files: dict[int, Handle] = {}
        self._dirs: dict[int, Listing] = {}
        self._writers: dict[int, FileWriter] = {}  # inode -> its writer
        self._orphans: dict[int, Any] = {}  # inode -> its last entry (protobuf)
        # One registration with the native loop at a time per handle: two refreshes of one
        # file (the filer may announce a change twice) must not end with the older one's
        # chunk list registered, or with none.
        self._native_locks: dict[int, trio.Lock] = {}
        self._open_mtime: dict[int, int] = {}
        self._native: NativeLoop | None = None
        # Offers only while the metadata stream is up: then every change elsewhere reaches
        # ``withdraw_native`` (through ``Tree.forget_path``); held entries expire otherwise.
        self._stream_up = False

    def attach_native(self, native: NativeLoop | None) -> None:
        """The native loop (once the session is mounted), or None when it does not run."""
        self._native = native

    def _number(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def stats(self) -> dict[str, int]:
        """Open read handles and directory handles, for the stats xattr."""
        return {"open_files": sum(1 for h in self._files.values() if not h.writes),
                "open_dirs": len(self._dirs)}

    # -- directories ---------------------------------------------------------------------

    def open_dir(self, listing: Listing) -> int:
        """A directory handle for ``listing`` (sorted names and entries)."""
        fh = self._number()
        self._dirs[fh] = listing
        return fh

    def listing(self, fh: int) -> Listing:
        """The listing directory handle ``fh`` was opened with (empty if none)."""
        return self._dirs.get(fh, [])

    def release_dir(self, fh: int) -> None:
        """Ends a directory handle."""
        self._dirs.pop(fh, None)

    # -- file handles --------------------------------------------------------------------

    def _reader(self, path: str, inode: int, view: FileView) -> OpenFile:
        return OpenFile(path, inode, view, self._readahead, self._cache)

    def open_read(self, path: str, inode: int, view: FileView) -> int:
        """A read handle of ``view``'s version of the file."""
        fh = self._number()
        self._files[fh] = Handle(fh, inode, self._reader(path, inode, view))
        return fh

    def open_write(self, inode: int) -> int:
        """A write handle of ``inode``, whose writer is already here."""
        assert inode in self._writers, "a write handle needs the file's writer"
        fh = self._number()
        self._files[fh] = Handle(fh, inode, None)
        return fh

    def get(self, fh: int) -> Handle | None:
        """The file handle ``fh``, if it is open."""
        return self._files.get(fh)

    def release(self, fh: int) -> Handle | None:
        """Ends file handle ``fh``; returns it (None if it was not open)."""
        h = self._files.pop(fh, None)
        self._native_locks.pop(fh, None)
        if h is not None and not h.writes and self._native is not None:
            self._native.forget(fh, h.inode)
        return h

    def is_open(self, inode: int) -> bool:
        """Whether any handle is open on ``inode``."""
        w = self._writers.get(inode)
        return (w is not None and w.handles > 0) or any(
            h.inode == inode and not h.writes for h in self._files.values())

    def keep_cache(self, inode: int, mtime_ns: int) -> bool:
        """Notes that ``inode`` was opened at ``mtime_ns``; True when it was last opened
        at the same one (the kernel may keep the pages it has)."""
        keep = self._open_mtime.get(inode) == mtime_ns
        self._open_mtime[inode] = mtime_ns
        return keep

    def inode_forgotten(self, inode: int) -> None:
        """The kernel forgot ``inode``: a later inode of that number is another file."""
        self.withdraw_native(inode)
        self._open_mtime.pop(inode, None)

    # -- inodes the native loop opens ----------------------------------------------------

    def stream_state(self, up: bool) -> None:
        """The metadata stream came up or broke: while it is down, changes elsewhere may
        be missed, so no inode is opened natively."""
        self._stream_up = up
        if not up and self._native is not None:
            for inode in self._native.offered_inodes():
                self.withdraw_native(inode)

    @property
    def stream_up(self) -> bool:
        """Whether the metadata stream is up (other clients' changes reach this mount)."""
        return self._stream_up

    @property
    def offers_native(self) -> bool:
        """Whether files may be offered to the native loop now (it runs, the stream is up)."""
        return self._native is not None and self._stream_up

    def offer_native(self, path: str, inode: int, entry: Entry, view: FileView,
                     lookup: LookupEntry | None = None) -> bool:
        """Lets the native loop answer read-only OPENs of ``inode`` (``entry`` and
        ``view`` held, fresh), and with ``lookup`` the LOOKUPs of its name, when nothing
        here writes it, it has one name (a change through another name would not reach
        it) and the stream is up. Whether it is offered (so) now."""
        native = self._native
        if native is None or not self._stream_up or inode in self._writers \
                or inode in self._orphans or not stat.S_ISREG(entry.mode) or entry.nlink > 1 \
                or entry.hard_link_id:
            return False
        offered = native.offered(inode)
        same = offered is view
        if same and (lookup is None or native.named(inode)):
            return True
        if offered is not None and not same:
            self.withdraw_native(inode)  # another version: its open handles read the old one
        # Offered again to add its name: whether a native open kept pages is not known
        # here, so the next open drops them (an older version's may be among them).
        keep = not same and self._open_mtime.get(inode) == entry.mtime_ns
        if native.offer(inode, path, view, keep, lookup):
            self._open_mtime[inode] = entry.mtime_ns
            return True
        return False

    def withdraw_native(self, inode: int | None) -> None:
        """Stops the native loop opening ``inode``, and takes over the handles it opened
        of it that are still open (they read the version they were opened on). Called
        before anything here acts on a change to the file."""
        if self._native is None or inode is None:
            return
        if self._native.offered(inode) is not None:
            # The offer noted its version as opened; if no native open came, the next
            # open must still drop the kernel's pages, which may be an older version's.
            self._open_mtime.pop(inode, None)
        for fh, path, view in self._native.withdraw(inode):
            self._take(fh, inode, path, view)

    def withdraw_native_under(self, path: str) -> None:
        """``withdraw_native`` for every inode offered at ``path`` or under it."""
        if self._native is not None:
            for inode in self._native.offered_under(path):
                self.withdraw_native(inode)

    def adopt_native(self, fh: int) -> Handle | None:
        """The handle ``fh`` if it is open: one of this table's, or one the native loop
        opened, taken over now (a request for it reached the Python operations)."""
        h = self._files.get(fh)
        if h is not None or self._native is None:
            return h
        got = self._native.adopt(fh)
        if got is None:
            return None
        inode, path, view = got
        return self._take(fh, inode, path, view)

    def _take(self, fh: int, inode: int, path: str, view: FileView) -> Handle:
        h = Handle(fh, inode, self._reader(path, inode, view))
        self._files[fh] = h
        if self._native is not None:  # still registered for READs: forgotten at release
            self._native.track(fh, inode)
        return h

    async def register_native(self, fh: int, inode: int, view: FileView) -> None:
        """Lets the native loop answer READs of ``fh`` from ``view``, unless by the time
        that is ready the handle has a newer view or the file is being written here."""
        native = self._native
        if native is None or inode in self._writers:
            return
        async with self._native_locks.setdefault(fh, trio.Lock()):
            if self._files.get(fh) is None:
                return  # released meanwhile
            if not native.load_now(fh, view):  # a volume's location must be asked for
                await self._calls.off_loop(native.load, fh, view)
            h = self._files.get(fh)
            if h is None or h.reader is None or h.reader.view is not view \
                    or inode in self._writers:
                native.forget(fh, inode)  # the Python operations answer this handle
            else:
                native.track(fh, inode)

    async def refresh(self, inode: int, path: str) -> None:
        """Gives the read handles of ``inode`` the file's current version."""
        readers = [h for h in self._files.values() if h.inode == inode and not h.writes]
        if not readers:
            return
        try:
            view = await self._calls.off_loop(self._client.view, path)
        except OSError:
            return
        refreshed = []
        for h in readers:
            if self._files.get(h.fh) is not h:
                continue  # released meanwhile
            if self._native is not None:  # its chunk list is the old version's
                self._native.forget(h.fh, inode)
            h.reread(self._reader(path, inode, view))
            refreshed.append(h.fh)
        for fh in refreshed:
            await self.register_native(fh, inode, view)

    # -- writers -------------------------------------------------------------------------

    def writer(self, inode: int | None) -> FileWriter | None:
        """The writer of ``inode`` while it is written here."""
        return self._writers.get(inode) if inode is not None else None

    def writers(self) -> list[FileWriter]:
        """Every writer of the mount."""
        return list(self._writers.values())

    def add_writer(self, inode: int, writer: FileWriter) -> None:
        """``inode`` is written here from now on: its reads go through ``writer``."""
        assert inode not in self._writers
        self.withdraw_native(inode)
        self._writers[inode] = writer
        if self._native is not None:  # reads of this file must now see its dirty bytes
            self._native.forget_inode(inode)

    def drop_writer(self, inode: int, writer: FileWriter) -> bool:
        """Drops ``writer`` once its last handle is closed, unless the file is an orphan
        (its writer goes with ``take_orphan``); True when it was dropped."""
        if self._writers.get(inode) is not writer or writer.handles or inode in self._orphans:
            return False
        del self._writers[inode]
        return True

    # -- files unlinked while open -------------------------------------------------------

    def orphan(self, inode: int, entry: Any) -> None:
        """``inode`` was unlinked here while open; ``entry`` is its last (protobuf)."""
        self._orphans[inode] = entry

    def is_orphan(self, inode: int) -> bool:
        """Whether ``inode`` was unlinked here while open, and is open still."""
        return inode in self._orphans

    def orphan_entry(self, inode: int) -> Entry | None:
        """The read-side entry of an open file unlinked here (link count 0), or None when
        ``inode`` is not one."""
        pb = self._orphans.get(inode)
        if pb is None:
            return None
        w = self._writers.get(inode)
        entry = w.attributes_entry() if w is not None else entry_from_pb(pb, pb.name)
        entry.nlink = 0
        return entry

    def set_orphan_attributes(self, inode: int, values: dict[str, int]) -> None:
        """Attributes set on an orphan that has no writer (they live until it is gone)."""
        pb = self._orphans[inode]
        for name, value in values.items():
            setattr(pb.attributes, name, value)

    def take_orphan(self, inode: int) -> Any | None:
        """The last entry of orphan ``inode`` once none of its handles is open (its writer
        goes with it), to be deleted; None while it is still open or not an orphan."""
        pb = self._orphans.get(inode)
        if pb is None or self.is_open(inode):
            return None
        del self._orphans[inode]
        w = self._writers.pop(inode, None)
        return w.merged() if w is not None else pb
