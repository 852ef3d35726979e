"""Inodes the native loop opens itself (``HandleTable.offer_native`` and the takeovers):
the table and ``native.NativeLoop`` over a stand-in for the Rust loop's registry that keeps
its rules (offers, handles it opened, adoption), without a cluster or a FUSE session."""

from __future__ import annotations

import stat
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("pyfuse3", reason="the mount's parts need pyfuse3")

from seaweed_rdma.mount.blocks import BlockCache
from seaweed_rdma.mount.handle_table import HandleTable
from seaweed_rdma.mount.native import NATIVE_FH, NativeLoop


class Reads:
    """The Rust loop's offer and handle rules (``rust/fuse/opens.rs``)."""

    def __init__(self) -> None:
        self.offers: dict[int, bool] = {}
        self.handles: dict[int, int] = {}
        self.registered: set[int] = set()
        self.names: dict[int, Any] = {}
        self.lookups: dict[int, int] = {}
        self.next = 0

    def offer(self, inode: int, chunks: list[Any], size: int, keep: bool,
              lookup: Any = None) -> None:
        self.offers[inode] = keep
        self.names[inode] = lookup

    def take_lookups(self, inode: int) -> int:
        return self.lookups.pop(inode, 0)

    def open(self, inode: int) -> int | None:  # what an OPEN from the kernel does
        if inode not in self.offers:
            return None
        fh = NATIVE_FH | self.next
        self.next += 1
        self.handles[fh] = inode
        self.registered.add(fh)
        return fh

    def withdraw(self, inode: int) -> list[int]:
        self.offers.pop(inode, None)
        self.names.pop(inode, None)
        mine = [fh for fh, i in self.handles.items() if i == inode]
        for fh in mine:
            del self.handles[fh]
        return mine

    def adopt(self, fh: int) -> int | None:
        return self.handles.pop(fh, None)

    def register(self, fh: int, chunks: list[Any], size: int) -> None:
        self.registered.add(fh)

    def unregister(self, fh: int) -> bool:
        was = fh in self.registered
        self.registered.discard(fh)
        return was


def entry(mtime_ns: int = 1, nlink: int = 1) -> Any:
    return SimpleNamespace(mode=stat.S_IFREG | 0o644, mtime_ns=mtime_ns, nlink=nlink,
                           hard_link_id=b"", size=10)


def view(e: Any) -> Any:
    chunk = SimpleNamespace(volume_id=1, file_id="1,0a00000001", offset=0, size=10,
                            modified_ts_ns=1, whole=False)
    return SimpleNamespace(entry=e, inline=None, chunks=[chunk], size=10)


def rig_with_loop() -> tuple[HandleTable, Reads, NativeLoop]:
    fast = SimpleNamespace(targets=lambda c: ["s:1"])
    client = SimpleNamespace(reader=SimpleNamespace(fast=fast),
                             master=SimpleNamespace(known=lambda vid: ["v:1"]))
    reads = Reads()
    t = HandleTable(client, None, BlockCache(0), 1 << 20)  # type: ignore[arg-type]
    native = NativeLoop(reads, client)  # type: ignore[arg-type]
    t.attach_native(native)
    t.stream_state(True)
    return t, reads, native


def rig() -> tuple[HandleTable, Reads]:
    t, reads, _ = rig_with_loop()
    return t, reads


def test_an_offer_needs_the_stream_one_name_and_no_writer() -> None:
    t, reads = rig()
    t.stream_state(False)
    t.offer_native("/d/f", 5, entry(), view(entry()))
    assert reads.offers == {}, "stream down: changes elsewhere may be missed"
    t.stream_state(True)
    t.offer_native("/d/g", 6, entry(nlink=2), view(entry()))
    assert reads.offers == {}, "a hard link"
    t.add_writer(5, SimpleNamespace(handles=1))  # type: ignore[arg-type]
    t.offer_native("/d/f", 5, entry(), view(entry()))
    assert reads.offers == {}, "written here"
    e = entry()
    t.offer_native("/d/h", 7, e, view(e))
    assert reads.offers == {7: False}, "never opened before: the kernel drops its pages"
    t.stream_state(False)
    assert reads.offers == {}, "a broken stream withdraws every offer"


def test_a_withdrawn_inodes_open_handles_are_the_tables_and_release_through_it() -> None:
    t, reads = rig()
    e = entry()
    t.offer_native("/d/f", 5, e, view(e))
    a, b = reads.open(5), reads.open(5)
    assert a is not None and b is not None
    assert not t.is_open(5), "the loop's handles are invisible until taken over"
    t.withdraw_native(5)  # what unlink, rename, setattr, a writer or an event do first
    assert reads.open(5) is None and reads.handles == {}
    assert t.is_open(5) and t.get(a) is not None and t.get(b) is not None
    t.orphan(5, object())
    t.release(a)
    assert t.take_orphan(5) is None, "b is still open"
    t.release(b)
    assert t.take_orphan(5) is not None
    assert a not in reads.registered and b not in reads.registered


def test_a_request_with_a_loop_handle_takes_that_one_over() -> None:
    t, reads = rig()
    e = entry()
    t.offer_native("/d/f", 5, e, view(e))
    a, b = reads.open(5), reads.open(5)
    assert a is not None and b is not None
    h = t.adopt_native(a)
    assert h is not None and h.inode == 5 and h.reader is not None
    assert t.adopt_native(a) is h, "once"
    assert reads.handles == {b: 5}, "the other stays the loop's"
    assert t.adopt_native(NATIVE_FH | 999) is None and t.adopt_native(12345) is None
    # A new version: the old one's handles are taken over, the new one offered.
    e2 = entry(mtime_ns=2)
    t.offer_native("/d/f", 5, e2, view(e2))
    assert reads.handles == {} and t.get(b) is not None and reads.offers == {5: False}
    # A directory above it moved or went.
    t.withdraw_native_under("/d")
    assert reads.offers == {}


def test_an_offer_withdrawn_before_any_native_open_leaves_the_next_open_dropping_pages() -> None:
    t, reads = rig()
    e = entry(mtime_ns=3)
    t.offer_native("/d/f", 5, e, view(e))
    assert reads.offers == {5: False}
    # Withdrawn (a chmod, an event, the stream blinking) before the kernel opened it: the
    # pages it holds may be an older version's, so the next open must not keep them.
    t.withdraw_native(5)
    assert not t.keep_cache(5, 3)
    assert t.keep_cache(5, 3), "opened at that version now: the next open may keep them"


def test_offers_under_a_path_are_found_by_directory() -> None:
    t, reads, native = rig_with_loop()
    for inode, path in ((5, "/d/f"), (6, "/d/e/g"), (7, "/dx/h"), (8, "/x")):
        e = entry()
        t.offer_native(path, inode, e, view(e))
    assert sorted(native.offered_under("/d")) == [5, 6]
    assert native.offered_under("/d/f") == [5] and native.offered_under("/d/e") == [6]
    assert sorted(native.offered_under("/")) == [5, 6, 7, 8]
    t.withdraw_native(6)
    assert native.offered_under("/d") == [5]
    t.withdraw_native_under("/dx")
    assert sorted(reads.offers) == [5, 8]
