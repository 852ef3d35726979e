"""Inode numbers for filer paths, with the kernel's lookup counts.

The kernel holds a reference on an inode for every lookup it was answered (``lookup``, and
each entry of ``readdirplus``), and gives them back with ``forget``. Once a path's count
falls to zero the kernel no longer knows its number, so the table drops it and memory stays
bounded by what the kernel caches, not by every name ever looked up. A path looked up again
later gets a new number, which is what the kernel expects of a forgotten inode.
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
        if self._by_path.get(path) == inode:
            del self._by_path[path]
        return True

    def find(self, path: str) -> int | None:
        """The inode of ``path`` if it has one (never assigns one)."""
        return self._by_path.get(path)

    def detach(self, path: str) -> None:
        """Unbinds ``path`` from its inode (the file went away): the inode keeps its path
        for the kernel's remaining references, and a new file at ``path`` gets a new
        number."""
        self._by_path.pop(path, None)

    def rename(self, old: str, new: str) -> None:
        """Moves ``old`` (and, for a directory, every path under it) to ``new``, keeping
        inode numbers, as the kernel expects after a rename."""
        prefix = old.rstrip("/") + "/"
        moved = [(p, i) for p, i in self._by_path.items() if p == old or p.startswith(prefix)]
        for p, ino in moved:
            target = new + p[len(old):]
            if self._by_path.get(p) == ino:
                del self._by_path[p]
            self._by_path[target] = ino
            self._by_inode[ino] = target

    def path(self, inode: int) -> str:
        """The path of a known inode; ``KeyError`` for one never handed out or forgotten."""
        return self._by_inode[inode]

    def child(self, parent: int, name: str) -> str:
        """The path of ``name`` inside directory ``parent``."""
        base = self._by_inode[parent]
        return (base.rstrip("/") + "/" + name) if base != "/" else "/" + name
