"""The tree of names as this mount sees it: the one owner of what it knows of names beyond
the filer's answers (``Tree``).

- Entries come from the Client's held metadata (``held.HeldMetadata``, the one owner of
  the entries the mount keeps); a file created here and not yet on the filer is answered
  from its writer instead (``pending_entry``).
- Directories made here whose every name this mount knows ("listed"): kept by our own
  changes, dropped at any other client's change in them or when the metadata stream
  breaks. A name not in one is answered ENOENT without asking the filer, which is what
  most lookups of a create are.
- Names that change (made, gone, renamed here or elsewhere) move inode numbers, writers
  and listed names along (``new_name``, ``gone``, ``follow_rename``) and drop what was
  cached of them (``forget_path``).
- Directory times set here and not yet on the filer are laid over the filer's
  (``dir_times.DirTimes``, composed here).
- The entry a file's last commit here stored, for a few seconds and while nothing changed
  it (``keep_stored``): rsync and install set a file's times and mode by its path after
  closing it, and such a setattr then needs no lookup before its update (the filer's
  chunk condition still guards it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pyfuse3

from ..errors import NotFound
from ..filer_grpc import PB, FilerGrpc, entry_from_pb, split_path
from .attrs import to_attributes
from .dir_times import DirTimes

# How long, and for how many files, a stored entry is kept (``Tree.keep_stored``): long
# enough for the setattr that follows a close, short enough that nothing else relies on it.
STORED_FOR_S = 5.0
STORED_KEPT = 1024

if TYPE_CHECKING:
    from ..client import Client
    from ..filer import Entry
    from .blocks import BlockCache
    from .calls import FilerCalls
    from .handle_table import HandleTable
    from .inodes import InodeTable
    from .writes import FileWriter


class Tree:
    """Names, entries and attributes of the mount (see the module docs)."""

    def __init__(self, client: Client, cache: BlockCache, inodes: InodeTable,
                 handles: HandleTable, grpc: FilerGrpc, calls: FilerCalls,
                 ttl: float) -> None:
        self._client = client
        self._cache = cache
        self._inodes = inodes
        self._handles = handles
        self._calls = calls
        self._ttl = ttl
        self._listed: dict[str, set[str]] = {}  # directory -> every name in it
        # inode -> (its path then, when, the entry as stored): see ``keep_stored``.
        self._stored: dict[int, tuple[str, float, Any]] = {}
        self.stored_used = 0  # setattrs laid on a stored entry (no lookup first)
        self.dir_times = DirTimes(grpc, calls.off_loop, self._dir_times_written,
                                  self.generation)

    # -- entries and attributes ----------------------------------------------------------

    async def entry(self, path: str) -> Entry:
        """The entry at ``path``: pending here, surely absent, or the filer's (held)."""
        pending = self.pending_entry(path)  # created here, on the filer at its first commit
        if pending is not None:
            return pending
        if self.known_absent(path):  # in a directory made here whose names are all known
            raise NotFound(f"{path}: no such file or directory")
        held = self._client.held(path)  # no filer call: answered on the loop
        if held is not None:
            return held[0]
        return await self._calls.riding(self._client.entry, path)

    def pending_entry(self, path: str) -> Entry | None:
        """The entry of a file created here that the filer does not have yet (its first
        commit writes it), for lookups; None for every other path."""
        w = self._handles.writer(self._inodes.find(path))
        if w is None or w.created or w.unlinked:
            return None
        return w.attributes_entry()  # type: ignore[no-any-return]

    def attributes(self, entry: Entry, inode: int) -> pyfuse3.EntryAttributes:
        """The kernel's attributes of ``entry``: as written here while it has a writer,
        with the directory times moved here."""
        w = self._handles.writer(inode)
        if w is not None:  # being written here: its size and times as written
            return self.written_attributes(w, inode)
        if entry.is_dir:
            entry = self.dir_times.apply(entry)
        return to_attributes(entry, inode, self._ttl)

    def written_attributes(self, w: FileWriter, inode: int) -> pyfuse3.EntryAttributes:
        """The kernel's attributes of a file being written here, from its writer."""
        return to_attributes(w.attributes_entry(), inode, self._ttl)

    async def inode_attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        """``getattr``: an open file unlinked here, a file being written here (from its
        writer: no filer call, and its entry converted once), or the entry's."""
        orphan = self.orphan_attributes(inode)
        if orphan is not None:
            return orphan
        w = self._handles.writer(inode)
        if w is not None and not w.unlinked:
            return self.written_attributes(w, inode)
        return self.attributes(await self.entry(self._inodes.path(inode)), inode)

    def orphan_attributes(self, inode: int) -> pyfuse3.EntryAttributes | None:
        """The attributes of an open file unlinked here (link count 0), else None."""
        entry = self._handles.orphan_entry(inode)
        return to_attributes(entry, inode, self._ttl) if entry is not None else None

    def forget_path(self, path: str) -> None:
        """Drops what the mount cached about ``path`` (not the kernel's view), and stops
        the native loop opening the file there (a directory's move or removal withdraws
        what is under it: ``HandleTable.withdraw_native_under``)."""
        inode = self._inodes.find(path)
        self._handles.withdraw_native(inode)
        if inode is not None:
            self._stored.pop(inode, None)
        self._client.invalidate(path)
        self._cache.invalidate_path(path)

    def committed_here(self, path: str, stored: Any) -> None:
        """A writer here wrote its entry at ``path``: what was cached of it is dropped,
        and ``stored`` (the entry it wrote, when surely the filer's now; else None) is
        held in its place, so a lookup between the close and the release (the kernel
        sends RELEASE after close returns) asks the filer nothing."""
        self.forget_path(path)
        if stored is not None and not stored.is_directory:
            self.hold(path, stored)

    def hold(self, path: str, pb: Any) -> None:
        """``pb`` is surely what the filer holds at ``path`` now (this mount wrote it and
        no other client's change was announced since): the Client holds it as the
        filer's entry (no event of this mount's own changes comes; any later change
        elsewhere drops it). Hard-linked entries are not held (see ``HeldMetadata``)."""
        if not pb.hard_link_id:
            self._client.remember(entry_from_pb(pb, path))

    def _dir_times_written(self, directory: str, written: Any) -> None:
        """Times written to ``directory``'s own entry: only that entry is dropped, not
        what is held under it (else every write of its times, one per burst of creates,
        would cost a listing of it at the next lookup); ``written`` (the entry as
        written, when surely the filer's) is held in its place."""
        self._client.invalidate(directory, subtree=False)
        if written is not None:
            self.hold(directory, written)

    def generation(self, path: str) -> int:
        """See ``Client.held_generation``: compared around a change made here."""
        return self._client.held_generation(path)

    def keep_stored(self, inode: int, path: str, entry: Any | None,
                    hold: bool = True) -> None:
        """``entry`` (a protobuf) is what the filer now holds at ``path``, stored by this
        mount just now: kept for ``stored_entry`` until anything changes ``path`` here or
        elsewhere (``forget_path``), the metadata stream breaks, or it is older than
        ``STORED_FOR_S``; and, with ``hold`` (nothing was announced of ``path`` while it
        was stored, so no newer version can be on the filer unseen: a later event drops
        it), held by the Client as the filer's entry (no event of this mount's own change
        comes), so a stat or an open right after asks the filer nothing. Hard-linked
        entries are not kept (another name changes them)."""
        self._stored.pop(inode, None)
        if entry is None or entry.is_directory or entry.hard_link_id:
            return
        if not self._handles.stream_up:
            return  # no event would drop it: another client's change could be undone
        self._stored[inode] = (path, time.monotonic(), entry)
        if hold:
            self.hold(path, entry)
        while len(self._stored) > STORED_KEPT:
            del self._stored[next(iter(self._stored))]

    def stored_entry(self, inode: int, path: str) -> Any | None:
        """A copy of the entry ``keep_stored`` kept for ``inode`` at ``path``, or None."""
        kept = self._stored.get(inode)
        if kept is None or kept[0] != path or time.monotonic() - kept[1] > STORED_FOR_S \
                or not self._handles.stream_up:
            return None
        self.stored_used += 1
        out = PB["Entry"]()
        out.CopyFrom(kept[2])
        return out

    # -- directories whose names are all known -------------------------------------------

    def known_absent(self, path: str) -> bool:
        """True when ``path`` is surely not there: its directory was made here and no
        name of that directory has changed elsewhere since."""
        directory, name = split_path(path)
        names = self._listed.get(directory)
        return names is not None and name not in names

    def forget_listed(self) -> None:
        """Forgets every directory's names (the metadata stream broke: changes elsewhere
        may have been missed), and every stored entry."""
        self._listed.clear()
        self._stored.clear()

    def _add(self, path: str) -> None:
        directory, name = split_path(path)
        names = self._listed.get(directory)
        if names is not None:
            names.add(name)

    def _remove(self, path: str) -> None:
        """``path`` went away here: out of its directory's names; names under it dropped."""
        names = self._listed.get(split_path(path)[0])
        if names is not None:
            names.discard(split_path(path)[1])
        self._drop_under(path)

    def changed_elsewhere(self, path: str) -> None:
        """Another client changed ``path``: the names of its directory, and of ``path`` and
        everything under it (it may be a directory), are no longer all known here."""
        self._listed.pop(split_path(path)[0], None)
        self._drop_under(path)

    def _drop_under(self, path: str) -> None:
        prefix = path + "/"
        for d in [d for d in self._listed if d == path or d.startswith(prefix)]:
            del self._listed[d]

    # -- names that change ---------------------------------------------------------------

    def new_name(self, path: str, directory: bool = False) -> None:
        """``path`` was made here (a new file gets a new inode number)."""
        self.forget_path(path)
        self._inodes.detach(path)
        self._add(path)
        self.dir_times.touch_parent(path)
        if directory:
            self._listed[path] = set()  # made just now: empty

    def linked(self, path: str) -> None:
        """``path`` was made here as another name of a file (``inodes`` bound it)."""
        self.forget_path(path)  # a held listing of its directory lacks it
        self._add(path)
        self.dir_times.touch_parent(path)

    def gone(self, path: str) -> None:
        """``path`` was removed here: its inode loses the name, and a writer of a file
        with no other name writes nowhere from now on."""
        self.forget_path(path)
        self._remove(path)
        self.dir_times.touch_parent(path)
        inode = self._inodes.find(path)
        if inode is None:
            return
        self._inodes.detach(path)
        others = [p for p in self._inodes.names(inode) if p != path]
        for other in others:  # a hard link: the other names' link count moved
            self.forget_path(other)
        w = self._handles.writer(inode)
        if w is not None:
            if others and w.path == path:
                w.moved_to(self._inodes.path(inode))  # the file lives on under another name
            elif not others:
                w.unlink()  # its handles write nowhere now

    def follow_rename(self, old: str, new: str) -> None:
        """``old`` (a file, or a directory and all under it) is now ``new``: inode numbers,
        the writers of open files and the names this mount knows move with it. A writer
        of a file that the move replaced writes nowhere from now on. Called for renames
        made here and for those the filer announces."""
        moving, replaced = self._inodes.find(old), self._inodes.find(new)
        # (A directory's move is announced for it and for each entry under it: those come
        # here after their inodes moved already, and replace nothing.)
        if moving is not None and replaced not in (None, moving):
            w = self._handles.writer(replaced)
            if w is not None:
                w.unlink()
        self._remove(old)
        self._add(new)
        self._inodes.rename(old, new)
        prefix = old + "/"
        for w in self._handles.writers():
            if w.path == old:
                w.moved_to(new)
            elif w.path.startswith(prefix):
                w.moved_to(new + w.path[len(old):])
