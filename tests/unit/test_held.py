"""HeldMetadata's rules without a cluster: a stand-in for the filer's HTTP listing and entry
calls (counting them), and metadata events built as the filer's protobufs."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from seaweed_rdma.errors import NotFound
from seaweed_rdma.filer import Chunk, Entry
from seaweed_rdma.filer_grpc import PB
from seaweed_rdma.held import HeldLimits, HeldMetadata


def _entry(path: str, fid: str = "1,01aa", mtime_s: int = 100, is_dir: bool = False) -> Entry:
    mode = (stat.S_IFDIR | 0o755) if is_dir else (stat.S_IFREG | 0o644)
    return Entry(path=path, mode=mode, size=10, mtime_ns=mtime_s * 1_000_000_000,
                 ctime_ns=0, crtime_ns=0, uid=0, gid=0, mime="", inode=0,
                 chunks=[] if is_dir else [Chunk(fid, 0, 10, 1)])


class Tree:
    """What the filer holds, and how often it was asked."""

    address = "stand-in"

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = {e.path: e for e in entries}
        self.gets = 0
        self.lists = 0
        self.list_gate: threading.Event | None = None

    def get_entry(self, path: str) -> Entry:
        self.gets += 1
        if path not in self.entries:
            raise NotFound(path)
        return self.entries[path]

    def iter_dir(self, path: str) -> Iterator[Entry]:
        self.lists += 1
        if self.list_gate is not None:
            self.list_gate.wait(5)
        prefix = path.rstrip("/") + "/"
        for p, e in sorted(self.entries.items()):
            if p.startswith(prefix) and "/" not in p[len(prefix):]:
                yield e


def _event(directory: str, old: Entry | None, new: Entry | None,
           new_parent: str = "") -> Any:
    def pb(e: Entry | None) -> Any:
        m = PB["Entry"]()
        if e is None:
            return m
        m.name = e.name
        m.is_directory = e.is_dir
        m.attributes.mtime = e.mtime_ns // 1_000_000_000
        m.attributes.file_size = e.size
        m.attributes.file_mode = e.mode & 0o777
        for c in e.chunks:
            m.chunks.add(file_id=c.file_id, offset=c.offset, size=c.size,
                         modified_ts_ns=c.modified_ts_ns)
        return m

    ev = PB["SubscribeMetadataResponse"](directory=directory)
    ev.event_notification.old_entry.CopyFrom(pb(old))
    ev.event_notification.new_entry.CopyFrom(pb(new))
    ev.event_notification.new_parent_path = new_parent
    return ev


@pytest.fixture
def tree() -> Tree:
    return Tree([_entry("/d", is_dir=True)] + [_entry(f"/d/f{i}", f"1,0{i}aa") for i in range(5)])


def _held(tree: Tree, **kw: Any) -> HeldMetadata:
    h = HeldMetadata(tree, HeldLimits(ttl=60, **kw))  # type: ignore[arg-type]
    h.stream_state(True)
    return h


def test_second_lookup_lists_then_nothing_is_asked(tree: Tree) -> None:
    h = _held(tree)
    h.get("/d/f0")
    h.get("/d/f1")
    assert (tree.gets, tree.lists) == (1, 1)
    for i in range(5):
        h.get(f"/d/f{i}")
    assert (tree.gets, tree.lists) == (1, 1)
    with pytest.raises(NotFound):
        h.get("/d/absent")  # not held: asked (it may have just been made elsewhere)
    tree.entries["/d/new"] = _entry("/d/new", "1,55aa")
    assert h.get("/d/new")[0].path == "/d/new"
    assert (tree.gets, tree.lists) == (3, 1)


def test_a_replayed_event_changes_nothing_and_a_new_version_is_fetched(tree: Tree) -> None:
    h = _held(tree)
    h.listdir("/d")
    h.on_event(_event("/d", None, tree.entries["/d/f1"]))  # a create we already listed
    h.on_event(_event("/", None, tree.entries["/d"]))  # the directory's own creation
    h.get("/d/f1")
    assert (tree.gets, tree.lists) == (0, 1), "replays must not drop what is held"
    newer = _entry("/d/f1", "1,99bb", mtime_s=200)
    tree.entries["/d/f1"] = newer
    h.on_event(_event("/d", tree.entries["/d/f1"], newer))
    assert h.get("/d/f1")[0].chunks[0].file_id == "1,99bb"
    assert tree.gets == 1
    with pytest.raises(NotFound):
        h.get("/d/absent")  # an in-place change leaves the directory whole
    assert tree.lists == 1


def test_a_delete_or_rename_elsewhere_is_never_answered_from_what_was_held(tree: Tree) -> None:
    h = _held(tree)
    h.listdir("/d")
    moved = _entry("/e/g", "1,03aa")
    del tree.entries["/d/f3"]
    tree.entries["/e/g"] = moved
    h.on_event(_event("/d", _entry("/d/f3", "1,03aa"), moved, new_parent="/e"))
    with pytest.raises(NotFound):
        h.get("/d/f3")  # not held any more: asked, and the filer says so
    assert h.get("/e/g")[0] is moved


def test_a_directory_renamed_drops_everything_under_it(tree: Tree) -> None:
    h = _held(tree)
    h.listdir("/d")
    tree.entries = {p.replace("/d", "/x", 1): e for p, e in tree.entries.items()}
    h.on_event(_event("/", _entry("/d", is_dir=True), _entry("/x", is_dir=True)))
    with pytest.raises(NotFound):
        h.get("/d/f0")
    assert h.stats()["entries"] == 0


def test_eviction_stops_a_directory_proving_absence(tree: Tree) -> None:
    h = _held(tree, max_entries=3)
    h.listdir("/d")
    assert h.stats()["directories"] == 0
    h.get("/d/f0")  # evicted: asked again, found
    assert tree.gets == 1


def test_a_fetch_that_raced_an_event_is_not_held(tree: Tree) -> None:
    h = _held(tree, list_dirs=False)
    real = tree.get_entry

    def racing(path: str) -> Entry:
        got = real(path)
        h.on_event(_event("/d", got, _entry(path, "1,77cc", mtime_s=300)))
        return got

    tree.get_entry = racing  # type: ignore[method-assign]
    h.get("/d/f2")
    tree.get_entry = real  # type: ignore[method-assign]
    h.get("/d/f2")
    assert tree.gets == 2, "the older answer was not held over the newer event"


def test_one_listing_however_many_threads_ask(tree: Tree) -> None:
    h = _held(tree)
    tree.list_gate = threading.Event()
    out: list[int] = []
    threads = [threading.Thread(target=lambda: out.append(len(h.listdir("/d"))))
               for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    tree.list_gate.set()
    for t in threads:
        t.join(5)
    assert out == [5] * 6 and tree.lists == 1


def test_without_the_stream_entries_expire(tree: Tree) -> None:
    h = HeldMetadata(tree, HeldLimits(ttl=0.05, list_dirs=False))  # type: ignore[arg-type]
    h.get("/d/f0")
    h.get("/d/f0")
    assert tree.gets == 1
    time.sleep(0.06)
    h.get("/d/f0")
    assert tree.gets == 2
    nothing = HeldMetadata(tree, HeldLimits(ttl=0))  # type: ignore[arg-type]
    for _ in range(3):
        nothing.get("/d/f0")
    assert (tree.gets, tree.lists) == (5, 0)


def test_a_hard_linked_name_is_always_asked_for(tree: Tree) -> None:
    """A change through another name of a file (its bytes, its link count) sends no event
    for this name, so no name of a hard-linked file is held; a listing that saw it does not
    make it absent either."""
    import dataclasses

    for name in ("/d/f3", "/d/f4"):
        tree.entries[name] = dataclasses.replace(tree.entries[name], hard_link_id=b"\x01\x02")
    h = _held(tree)
    h.get("/d/f0")
    h.get("/d/f1")  # the directory is listed and held, the two links with it are not
    assert (tree.gets, tree.lists) == (1, 1)
    for _ in range(2):
        assert h.get("/d/f3")[0].hard_link_id == b"\x01\x02"
    assert tree.gets == 3 and h.counts["held_absent"] == 0
    assert h.peek("/d/f4") is None and h.peek("/d/f2") is not None
    h.get("/d/f2")
    assert tree.gets == 3  # the others are held as before


def test_a_name_fetched_before_its_create_event_is_listed(tree: Tree) -> None:
    h = _held(tree)
    h.listdir("/d")
    made = tree.entries["/d/new"] = _entry("/d/new", "1,77aa")
    assert h.get("/d/new")[0].path == "/d/new"  # fetched: its event has not come yet
    h.on_event(_event("/d", None, made))  # the event then finds it shown already
    assert [e.name for e in h.listdir("/d")] == ["f0", "f1", "f2", "f3", "f4", "new"]
    assert tree.lists == 1


def test_a_drop_here_asks_for_that_name_alone(tree: Tree) -> None:
    """A change made by this client (``drop``) leaves the directory held whole for its
    other names: the dropped name is fetched alone, never the directory again."""
    h = _held(tree)
    h.listdir("/d")
    tree.entries["/d/f2"] = _entry("/d/f2", "1,77cc", mtime_s=300)
    h.drop("/d/f2")
    h.drop("/d/gone")  # unlinked here: whether it exists is not known
    assert h.held_listing("/d") is None  # a listing would be stale: listed again
    assert h.get("/d/f2")[0].chunks[0].file_id == "1,77cc"
    with pytest.raises(NotFound):
        h.get("/d/gone")
    assert (tree.gets, tree.lists) == (2, 1)
    for i in (0, 1, 3, 4):
        h.get(f"/d/f{i}")
    assert (tree.gets, tree.lists) == (2, 1)
    assert [e.path for e in h.listdir("/d")] == [f"/d/f{i}" for i in range(5)]
    assert tree.lists == 1  # every name known again: the held listing answers


def test_an_entry_drop_leaves_what_is_under_it(tree: Tree) -> None:
    h = _held(tree)
    h.listdir("/d")
    h.drop("/d", subtree=False)  # its own attributes changed here (its times)
    h.get("/d/f0")
    assert h.held_listing("/d") is not None
    assert (tree.gets, tree.lists) == (0, 1)


def test_generation_moves_when_a_path_or_a_directory_above_it_is_dropped(tree: Tree) -> None:
    h = _held(tree)
    h.listdir("/d")
    g = h.generation("/d/f1")
    h.drop("/d/f0")  # a sibling: not f1
    assert h.generation("/d/f1") == g
    h.on_event(_event("/d", tree.entries["/d/f1"], _entry("/d/f1", "1,88dd", mtime_s=400)))
    assert h.generation("/d/f1") != g
    g = h.generation("/d/f3")
    h.on_event(_event("/", _entry("/d", is_dir=True), _entry("/x", is_dir=True)))
    assert h.generation("/d/f3") != g


def test_generation_moves_for_a_path_never_held_when_its_directory_goes(tree: Tree) -> None:
    h = _held(tree)
    g = h.generation("/d/new")
    h.drop("/d")  # moved or removed: a name made under it meanwhile must not be held
    assert h.generation("/d/new") != g
