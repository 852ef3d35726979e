"""Path <-> inode numbers of the mount (``InodeTable``); public behaviour only."""

from __future__ import annotations

import pytest

pyfuse3 = pytest.importorskip("pyfuse3", reason="the mount's parts need pyfuse3")

from seaweed_rdma.mount.inodes import InodeTable  # noqa: E402


def test_root_is_the_root_inode() -> None:
    t = InodeTable("/")
    assert t.path(pyfuse3.ROOT_INODE) == "/"
    assert t.inode("/") == pyfuse3.ROOT_INODE


@pytest.mark.parametrize("root", ["/sub", "/sub/"])
def test_sub_root_and_its_children(root: str) -> None:
    t = InodeTable(root)
    assert t.path(pyfuse3.ROOT_INODE) == "/sub"
    assert t.child(pyfuse3.ROOT_INODE, "f") == "/sub/f"


def test_numbers_are_distinct_and_stable() -> None:
    t = InodeTable("/")
    a, b = t.inode("/a"), t.inode("/b")
    assert len({pyfuse3.ROOT_INODE, a, b}) == 3
    assert t.inode("/a") == a and t.path(a) == "/a" and t.path(b) == "/b"


def test_child_paths() -> None:
    t = InodeTable("/")
    d = t.inode("/d")
    assert t.child(pyfuse3.ROOT_INODE, "x") == "/x"
    assert t.child(d, "ünï cøde") == "/d/ünï cøde"


def test_unknown_inode_is_a_key_error() -> None:
    t = InodeTable("/")
    with pytest.raises(KeyError):
        t.path(987654)


def test_hard_links_share_one_inode() -> None:
    t = InodeTable("/")
    a = t.hard_link("/a", b"L")
    assert t.hard_link("/b", b"L") == a  # a lookup of the other name finds the same inode
    assert t.find("/b") == a and sorted(t.names(a)) == ["/a", "/b"]
    t.detach("/a")  # the first name went: the other carries the inode on
    assert t.find("/a") is None and t.path(a) == "/b"
    t.rename("/b", "/c")
    assert t.path(a) == "/c" and t.find("/c") == a
    t.bind("/d", a)
    t.detach("/c")
    assert t.path(a) == "/d"
    assert t.forget(a, 0) and t.find("/d") is None


def test_rename_over_a_name_unbinds_it() -> None:
    t = InodeTable("/")
    a, b = t.inode("/a"), t.inode("/b")
    t.rename("/a", "/b")
    assert t.find("/b") == a and t.path(b) == "/b"  # b keeps its path for the kernel
