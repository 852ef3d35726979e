"""Inode numbers for filer paths, stable for the life of the mount: a path keeps its
number after the kernel forgets it, so a later lookup gives the same one."""

from __future__ import annotations

import pyfuse3


class InodeTable:
    """Bidirectional path <-> inode map; the root is ``pyfuse3.ROOT_INODE``."""

    def __init__(self, root_path: str) -> None:
        self._root = root_path.rstrip("/") or "/"
        self._by_path: dict[str, int] = {self._root: pyfuse3.ROOT_INODE}
        self._by_inode: dict[int, str] = {pyfuse3.ROOT_INODE: self._root}
        self._next = pyfuse3.ROOT_INODE + 1

    def inode(self, path: str) -> int:
        """The inode of ``path``, assigning one on first sight."""
        ino = self._by_path.get(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._by_path[path] = ino
            self._by_inode[ino] = path
        return ino

    def path(self, inode: int) -> str:
        """The path of a known inode; ``KeyError`` for one never handed out."""
        return self._by_inode[inode]

    def child(self, parent: int, name: str) -> str:
        """The path of ``name`` inside directory ``parent``."""
        base = self._by_inode[parent]
        return (base.rstrip("/") + "/" + name) if base != "/" else "/" + name
