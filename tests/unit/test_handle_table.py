"""The mount's handle state (``HandleTable``) and its tree of names (``Tree``), without a
cluster or a FUSE session: public behaviour only."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pyfuse3 = pytest.importorskip("pyfuse3", reason="the mount's parts need pyfuse3")
trio = pytest.importorskip("trio")

from seaweed_rdma.filer_grpc import PB  # noqa: E402
from seaweed_rdma.mount.blocks import BlockCache  # noqa: E402
from seaweed_rdma.mount.handle_table import HandleTable  # noqa: E402
from seaweed_rdma.mount.inodes import InodeTable  # noqa: E402
from seaweed_rdma.mount.tree import Tree  # noqa: E402


class Writer:
    """What the table asks of a file's writer."""

    def __init__(self, path: str = "/f") -> None:
        self.handles = 0
        self.path = path
        self.created = True
        self.unlinked = False
        self.entry = PB["Entry"](name="written")

    def merged(self) -> Any:
        return self.entry

    def moved_to(self, path: str) -> None:
        self.path = path

    def unlink(self) -> None:
        self.unlinked = True


def writer(path: str = "/f") -> Any:
    return Writer(path)


def view(mtime_ns: int = 1) -> Any:
    return SimpleNamespace(entry=SimpleNamespace(mtime_ns=mtime_ns), size=10)


def table() -> HandleTable:
    return HandleTable(None, None, BlockCache(0), 1 << 20)  # type: ignore[arg-type]


def test_read_and_write_handles_are_numbered_apart_and_released_once() -> None:
    t = table()
    r = t.open_read("/f", 5, view())
    w = writer()
    t.add_writer(5, w)
    x = t.open_write(5)
    assert r != x
    assert t.get(r) is not None and not t.get(r).writes  # type: ignore[union-attr]
    assert t.get(x) is not None and t.get(x).writes  # type: ignore[union-attr]
    assert t.stats() == {"open_files": 1, "open_dirs": 0}
    assert t.is_open(5)
    released = t.release(r)
    assert released is not None and released.inode == 5
    assert t.release(r) is None and t.get(r) is None
    assert not t.is_open(5)  # the write handle counts through its writer's handles
    w.handles = 1
    assert t.is_open(5)


def test_keep_cache_only_for_the_same_mtime_of_a_known_inode() -> None:
    t = table()
    assert not t.keep_cache(7, 100)
    assert t.keep_cache(7, 100)
    assert not t.keep_cache(7, 200)
    t.inode_forgotten(7)
    assert not t.keep_cache(7, 200)


def test_directory_handles_hold_their_listing() -> None:
    t = table()
    fh = t.open_dir([(b"a", None)])  # type: ignore[list-item]
    assert t.listing(fh) == [(b"a", None)] and t.stats()["open_dirs"] == 1
    t.release_dir(fh)
    assert t.listing(fh) == []


def test_a_writer_goes_with_its_last_handle_unless_the_file_is_an_orphan() -> None:
    t = table()
    w = writer()
    written = w.entry
    t.add_writer(3, w)
    w.handles = 1
    assert not t.drop_writer(3, w)  # a handle is still open
    w.handles = 0
    assert not t.drop_writer(3, writer())  # not this inode's writer
    t.orphan(3, PB["Entry"](name="f"))
    assert not t.drop_writer(3, w) and t.writer(3) is w
    assert t.take_orphan(3) is written  # nothing open: it goes, with its writer
    assert t.writer(3) is None and not t.is_orphan(3)


def test_an_orphan_stays_while_a_handle_is_open() -> None:
    t = table()
    fh = t.open_read("/f", 4, view())
    pb = PB["Entry"](name="f")
    t.orphan(4, pb)
    t.set_orphan_attributes(4, {"uid": 42})
    entry = t.orphan_entry(4)
    assert entry is not None and entry.nlink == 0 and entry.uid == 42
    assert t.take_orphan(4) is None and t.is_orphan(4)
    t.release(fh)
    assert t.take_orphan(4) is pb and t.orphan_entry(4) is None


def tree() -> tuple[Tree, InodeTable, HandleTable, list[str]]:
    dropped: list[str] = []
    client = SimpleNamespace(invalidate=dropped.append)
    inodes = InodeTable("/")
    handles = table()
    calls = SimpleNamespace(off_loop=None)
    t = Tree(client, BlockCache(0), inodes, handles, None, calls, 1.0)  # type: ignore[arg-type]
    return t, inodes, handles, dropped


def test_a_directory_made_here_knows_every_name_until_changed_elsewhere() -> None:
    t, _, _, dropped = tree()
    assert not t.known_absent("/d/x")  # a directory not made here: ask the filer
    t.new_name("/d", directory=True)
    assert "/d" in dropped
    assert t.known_absent("/d/x")
    t.new_name("/d/x")
    assert not t.known_absent("/d/x") and t.known_absent("/d/y")
    t.gone("/d/x")
    assert t.known_absent("/d/x")
    t.changed_elsewhere("/d/z")
    assert not t.known_absent("/d/x")  # another client changed a name in it


def test_the_names_known_are_forgotten_when_the_stream_breaks() -> None:
    t, _, _, _ = tree()
    t.new_name("/d", directory=True)
    t.forget_listed()
    assert not t.known_absent("/d/x")


def test_a_rename_moves_inodes_and_writers_and_unlinks_a_replaced_writer() -> None:
    t, inodes, handles, _ = tree()
    a, b = inodes.inode("/d/a"), inodes.inode("/e/b")
    inside = inodes.inode("/d/a/f")
    moving, replaced, under = writer("/d/a"), writer("/e/b"), writer("/d/a/f")
    handles.add_writer(a, moving)
    handles.add_writer(b, replaced)
    handles.add_writer(inside, under)
    t.follow_rename("/d/a", "/e/b")
    assert inodes.find("/e/b") == a and inodes.find("/e/b/f") == inside
    assert moving.path == "/e/b" and under.path == "/e/b/f"
    assert replaced.unlinked and not moving.unlinked


def test_a_file_removed_here_writes_nowhere_unless_another_name_has_it() -> None:
    t, inodes, handles, _ = tree()
    ino = inodes.inode("/a")
    inodes.bind("/b", ino)  # a hard link
    w = writer("/a")
    handles.add_writer(ino, w)
    t.gone("/a")
    assert w.path == "/b" and not w.unlinked
    t.gone("/b")
    assert w.unlinked
