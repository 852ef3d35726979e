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
    a.st_nlink = 2 if stat.S_ISDIR(entry.mode) else entry.nlink  # 0: unlinked, open
    a.st_uid = entry.uid
    a.st_gid = entry.gid
    a.st_rdev = entry.rdev if stat.S_ISCHR(entry.mode) or stat.S_ISBLK(entry.mode) else 0
    if entry.is_symlink:
        size = len(entry.symlink_target.encode())
    elif stat.S_ISREG(entry.mode):
        size = entry.file_size
    else:  # fifos, sockets and devices have no bytes
        size = 0
    a.st_size = size
    a.st_blksize = BLOCK
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = entry.atime_ns or entry.mtime_ns
    a.st_mtime_ns = entry.mtime_ns
    a.st_ctime_ns = entry.ctime_ns or entry.mtime_ns
    return a
