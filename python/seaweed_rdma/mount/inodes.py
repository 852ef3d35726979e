"""Inode numbers: the one owner of the numbers of filer paths and of the kernel's lookup
counts (``InodeTable``).

The kernel holds a reference on an inode for every lookup it was answered (``lookup``, and
each entry of ``readdirplus``), and gives them back with ``forget``. Once a path's count
falls to zero the kernel no longer knows its number, so the table drops it and memory stays
bounded by what the kernel caches, not by every name ever looked up. A path looked up again
later gets a new number, which is what the kernel expects of a forgotten inode. The
native loop answers LOOKUPs of the names offered to it and counts those references itself;
they are added here (``add_refs``) before any count is given back.

A hard-linked file has one inode for all of its names (so the kernel keeps one set of
attributes and one page cache for it): ``link`` binds a second path to an inode, and a
lookup of a name whose entry carries a ``hard_link_id`` the table knows binds that name to
the same inode. The inode's ``path`` is one of its names; when that name goes, another
takes its place.
"""

from __future__ import annotations

import pyfuse3


class InodeTable:
    """Bidirectional path <-> inode map; the root is ``pyfuse3.ROOT_INODE`` and is never
    forgotten."""

    def __init__(self, root_path: str) -> None:
        self._root = root_path.rstrip("/") or "/"
        self._by_path: dict[str, int] = {self._root: pyfuse3.ROOT_INODE}
        self._by_inode: dict[int, str] = {pyfuse3.ROOT_INODE: self._root}
        self._lookups: dict[int, int] = {}
        self._aliases: dict[int, set[str]] = {}  # inode -> its other names (hard links)
        self._by_link: dict[bytes, int] = {}  # hard_link_id -> inode
        self._link_of: dict[int, bytes] = {}
        self._next = pyfuse3.ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_inode)

    def inode(self, path: str) -> int:
        """The inode of ``path``, assigning one on first sight (without a reference: use
        ``ref`` when the number goes to the kernel)."""
        ino = self._by_path.get(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._by_path[path] = ino
            self._by_inode[ino] = path
        return ino

    def ref(self, path: str) -> int:
        """The inode of ``path``, counting one kernel reference to it."""
        ino = self.inode(path)
        if ino != pyfuse3.ROOT_INODE:
            self._lookups[ino] = self._lookups.get(ino, 0) + 1
        return ino

    def add_refs(self, inode: int, n: int) -> None:
        """Counts ``n`` kernel references to ``inode`` that were handed out elsewhere (the
        native loop answers LOOKUPs of offered names: see ``native.NativeLoop``)."""
        if n > 0 and inode != pyfuse3.ROOT_INODE and inode in self._by_inode:
            self._lookups[inode] = self._lookups.get(inode, 0) + n

    def referenced(self, inode: int) -> bool:
        """Whether this table counts a kernel reference to ``inode`` (the root always)."""
        return inode == pyfuse3.ROOT_INODE or self._lookups.get(inode, 0) > 0

    def forget(self, inode: int, nlookup: int) -> bool:
        """Gives back ``nlookup`` kernel references; True when the inode was dropped."""
        if inode == pyfuse3.ROOT_INODE or inode not in self._by_inode:
            return False
        left = self._lookups.get(inode, 0) - nlookup
        if left > 0:
            self._lookups[inode] = left
            return False
        self._lookups.pop(inode, None)
        path = self._by_inode.pop(inode)
        for p in {path, *self._aliases.pop(inode, ())}:
            if self._by_path.get(p) == inode:
                del self._by_path[p]
        link = self._link_of.pop(inode, None)
        if link is not None and self._by_link.get(link) == inode:
            del self._by_link[link]
        return True

    def hard_link(self, path: str, link_id: bytes) -> int:
        """The inode of ``path``, a name of the hard-linked file ``link_id``: the inode its
        other names have if the table knows one (``path`` is bound to it), else the
        path's own (which then stands for ``link_id``). No reference is counted."""
        known = self._by_link.get(link_id)
        if known is not None and known in self._by_inode:
            current = self._by_path.get(path)
            if current != known:
                self.bind(path, known)
            return known
        ino = self.inode(path)
        self._by_link[link_id] = ino
        self._link_of[ino] = link_id
        return ino

    def bind(self, path: str, inode: int) -> None:
        """Makes ``path`` another name of ``inode`` (a hard link)."""
        old = self._by_path.get(path)
        if old is not None and old != inode:
            self._unbind(path, old)
        self._by_path[path] = inode
        if self._by_inode[inode] != path:
            self._aliases.setdefault(inode, set()).add(path)

    def names(self, inode: int) -> list[str]:
        """Every path of ``inode`` this table knows (its hard links)."""
        first = self._by_inode.get(inode)
        if first is None:
            return []
        return [first, *sorted(self._aliases.get(inode, ()))]

    def _unbind(self, path: str, inode: int) -> None:
        """``path`` no longer names ``inode``; if it was the inode's main name, one of
        its other names takes over."""
        if self._by_path.get(path) == inode:
            del self._by_path[path]
        others = self._aliases.get(inode)
        if others:
            others.discard(path)
            if self._by_inode.get(inode) == path and others:
                self._by_inode[inode] = others.pop()
            if not others:
                del self._aliases[inode]

    def find(self, path: str) -> int | None:
        """The inode of ``path`` if it has one (never assigns one)."""
        return self._by_path.get(path)

    def detach(self, path: str) -> None:
        """Unbinds ``path`` from its inode (the file went away): the inode keeps its path
        for the kernel's remaining references (unless another name of a hard-linked file
        can take over), and a new file at ``path`` gets a new number."""
        ino = self._by_path.get(path)
        if ino is not None:
            self._unbind(path, ino)

    def rename(self, old: str, new: str) -> None:
        """Moves ``old`` (and, for a directory, every path under it) to ``new``, keeping
        inode numbers, as the kernel expects after a rename."""
        prefix = old.rstrip("/") + "/"
        moved = [(p, i) for p, i in self._by_path.items() if p == old or p.startswith(prefix)]
        for p, ino in moved:
            target = new + p[len(old):]
            replaced = self._by_path.get(target)
            if replaced is not None and replaced != ino:
                self._unbind(target, replaced)
            if self._by_path.get(p) == ino:
                del self._by_path[p]
            self._by_path[target] = ino
            aliases = self._aliases.get(ino)
            if self._by_inode[ino] == p:
                self._by_inode[ino] = target
            elif aliases is not None:
                aliases.discard(p)
                aliases.add(target)

    def path(self, inode: int) -> str:
        """The path of a known inode; ``KeyError`` for one never handed out or forgotten."""
        return self._by_inode[inode]

    def child(self, parent: int, name: str) -> str:
        """The path of ``name`` inside directory ``parent``."""
        base = self._by_inode[parent]
        return (base.rstrip("/") + "/" + name) if base != "/" else "/" + name
