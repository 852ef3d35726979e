"""Pure pieces of the write side (no cluster): pages, inode renames, mode bits, the filer
message subset."""

from __future__ import annotations

import errno
import stat

from seaweed_rdma.filer_grpc import PB, entry_from_pb, errno_of_text, posix_to_go_mode
from seaweed_rdma.mount.inodes import InodeTable
from seaweed_rdma.mount.writes import Page, _merge


def test_ranges_merge_and_pages_clip() -> None:
    assert _merge([(0, 10), (20, 30)], 10, 20) == [(0, 30)]
    assert _merge([(0, 10)], 15, 18) == [(0, 10), (15, 18)]
    p = Page(0)
    p.put(5, memoryview(b"abc"))
    p.put(0, memoryview(b"xy"))
    assert p.ranges == [(0, 2), (5, 8)] and bytes(p.buf) == b"xy\0\0\0abc"
    p.clip(6)
    assert p.ranges == [(0, 2), (5, 6)] and bytes(p.buf) == b"xy\0\0\0a"


def test_inode_rename_moves_children_and_detach_gives_new_numbers() -> None:
    t = InodeTable("/")
    d, f = t.ref("/d"), t.ref("/d/f")
    t.rename("/d", "/e")
    assert (t.find("/e"), t.find("/e/f"), t.find("/d")) == (d, f, None)
    assert t.path(f) == "/e/f"
    t.detach("/e/f")
    assert t.find("/e/f") is None and t.path(f) == "/e/f"
    assert t.ref("/e/f") != f


def test_mode_bits_and_entries_round_trip() -> None:
    assert posix_to_go_mode(0o4755, "dir") == (1 << 31) | (1 << 23) | 0o755
    e = PB["Entry"](name="x")
    e.attributes.file_mode = posix_to_go_mode(0o640)
    e.attributes.file_size = 10
    e.attributes.mtime, e.attributes.mtime_ns = 5, 7
    e.chunks.add(file_id="3,01637037d6", offset=4, size=20, modified_ts_ns=1)
    e.extended["xattr-user.a"] = b"v"
    got = entry_from_pb(PB["Entry"].FromString(e.SerializeToString()), "/x")
    assert stat.S_IMODE(got.mode) == 0o640 and stat.S_ISREG(got.mode)
    assert (got.file_size, got.mtime_ns, got.extended) == (24, 5_000_000_007,
                                                           {"xattr-user.a": b"v"})


def test_filer_error_texts() -> None:
    assert errno_of_text("filer: no entry is found in filer store") == errno.ENOENT
    assert errno_of_text("fail to delete non-empty folder: /d") == errno.ENOTEMPTY
    assert errno_of_text("/d: entry already exists") == errno.EEXIST
    assert errno_of_text("something else") == errno.EIO
