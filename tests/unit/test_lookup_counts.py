"""The inode table follows the kernel's lookup counts: memory stays flat however many
distinct names are looked up, as long as the kernel forgets them."""

from __future__ import annotations

import tracemalloc

import pyfuse3

from seaweed_rdma.mount.inodes import InodeTable


def test_a_million_distinct_lookups_leave_nothing_behind() -> None:
    t = InodeTable("/")
    tracemalloc.start()
    try:
        for i in range(1000):  # warm the dicts to their working size
            t.forget(t.ref(f"/warm/{i}"), 1)
        base, _ = tracemalloc.get_traced_memory()
        for i in range(1_000_000):
            ino = t.ref(f"/d/name-{i}")
            assert t.forget(ino, 1)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(t) == 1  # only the root
    assert after - base < 64 << 10, f"grew by {after - base} bytes"


def test_counts_add_up_before_an_inode_goes() -> None:
    t = InodeTable("/data")
    a = t.ref("/data/a")
    assert t.ref("/data/a") == a  # the kernel got the same number twice
    assert not t.forget(a, 1)
    assert t.path(a) == "/data/a"
    assert t.forget(a, 1)
    assert len(t) == 1
    b = t.ref("/data/a")
    assert b != a  # a forgotten number is never reused for another lookup
    assert not t.forget(pyfuse3.ROOT_INODE, 5)  # the root stays
    assert t.path(pyfuse3.ROOT_INODE) == "/data"


def test_unreferenced_inode_dropped_by_zero_forget() -> None:
    t = InodeTable("/")
    ino = t.inode("/x")  # handed out but the kernel did not take it
    assert t.forget(ino, 0)
    assert len(t) == 1
