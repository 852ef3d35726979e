"""Filer entries as FUSE attributes."""

from __future__ import annotations

import stat

import pyfuse3

from ..filer import Entry

BLOCK = 1 << 20


def to_attributes(entry: Entry, inode: int, ttl: float) -> pyfuse3.EntryAttributes:
    """``EntryAttributes`` for an entry, with kernel timeouts equal to the metadata TTL."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = inode
    a.generation = 0
    a.entry_timeout = ttl
    a.attr_timeout = ttl
    a.st_mode = entry.mode
    a.st_nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    a.st_uid = entry.uid
    a.st_gid = entry.gid
    a.st_rdev = 0
    size = len(entry.symlink_target) if entry.is_symlink else entry.file_size
    a.st_size = size
    a.st_blksize = BLOCK
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = entry.mtime_ns
    a.st_mtime_ns = entry.mtime_ns
    a.st_ctime_ns = entry.ctime_ns or entry.mtime_ns
    return a
