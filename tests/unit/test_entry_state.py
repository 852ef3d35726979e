"""``EntryState``: what a writer sends is the filer's version it last saw with its own
changes on top, never a chunk list it did not read. Behaviour only, no cluster."""

from __future__ import annotations

import pytest

pytest.importorskip("trio", reason="the mount's parts need trio")

from seaweed_rdma.filer_grpc import PB, chunk_fids
from seaweed_rdma.mount.entry_state import EntryState, entry_size


def entry(*chunks: tuple[str, int, int], mode: int = 0o644, size: int | None = None) -> object:
    e = PB["Entry"](name="f")
    for fid, off, n in chunks:
        e.chunks.add(file_id=fid, offset=off, size=n, modified_ts_ns=1)
    e.attributes.file_mode = mode
    e.attributes.file_size = size if size is not None else max(
        (o + n for _, o, n in chunks), default=0)
    e.attributes.mtime = 100
    return e


def chunk(fid: str, off: int, n: int) -> object:
    return PB["FileChunk"](file_id=fid, offset=off, size=n, modified_ts_ns=2)


def test_metadata_change_keeps_the_base_chunks_and_sends_them_as_the_condition() -> None:
    s = EntryState(entry(("1,a", 0, 10), ("1,b", 10, 10)))
    assert not s.dirty
    s.set_attributes({"file_mode": 0o600})
    out = s.to_send(5_000_000_000)
    assert chunk_fids(out) == ["1,a", "1,b"] == s.base_fids
    assert out.attributes.file_mode == 0o600 and out.attributes.mtime == 100
    assert out.attributes.ctime == 5


def test_rebase_lays_changes_on_the_newer_version() -> None:
    s = EntryState(entry(("1,a", 0, 6 << 20)))
    s.set_attributes({"file_mode": 0o600})
    s.set_xattr("xattr-user.k", b"v")
    s.rebase(entry(("2,z", 0, 24), mode=0o644))
    out = s.to_send(1)
    assert chunk_fids(out) == ["2,z"] and s.base_fids == ["2,z"]
    assert out.attributes.file_mode == 0o600 and out.extended["xattr-user.k"] == b"v"
    assert entry_size(out) == 24


def test_added_chunks_go_on_top_of_a_rebased_version() -> None:
    s = EntryState(entry(("1,a", 0, 100)))
    s.add_chunks([chunk("3,c", 10, 5)])
    s.rebase(entry(("1,a", 0, 100), ("2,t", 100, 4)))
    out = s.to_send(7_000_000_000)
    assert chunk_fids(out) == ["1,a", "2,t", "3,c"]
    assert out.attributes.file_size == 104 and out.attributes.mtime == 7


def test_truncation_clips_the_base_and_survives_a_rebase() -> None:
    s = EntryState(entry(("1,a", 0, 50), ("1,b", 50, 50)))
    s.truncate(60)
    assert s.size == 60
    out = s.view()
    assert [(c.file_id, c.size) for c in out.chunks] == [("1,a", 50), ("1,b", 10)]
    s.truncate(200)  # grows with a hole
    assert s.size == 200
    s.rebase(entry(("1,a", 0, 50), ("1,b", 50, 50), ("9,x", 100, 500)))
    assert [(c.file_id, c.size) for c in s.view().chunks] == [("1,a", 50), ("1,b", 10)]
    assert s.size == 200


def test_supersede_drops_byte_changes_but_keeps_metadata() -> None:
    s = EntryState(entry(("1,a", 0, 100)))
    s.add_chunks([chunk("3,c", 200, 5)])
    s.set_attributes({"uid": 7})
    assert s.supersede() == 5
    s.rebase(entry(("2,z", 0, 24)))
    out = s.to_send(1)
    assert chunk_fids(out) == ["2,z"] and entry_size(out) == 24 and out.attributes.uid == 7
    assert not s.bytes_changed


def test_commit_makes_the_sent_entry_the_base() -> None:
    s = EntryState(entry(("1,a", 0, 10)))
    s.add_chunks([chunk("3,c", 10, 10)])
    sent = s.to_send(1)
    s.committed(sent)
    assert not s.dirty and sorted(s.base_fids) == ["1,a", "3,c"] and s.size == 20


def test_same_content_tells_metadata_events_from_new_bytes() -> None:
    s = EntryState(entry(("1,a", 0, 10), ("1,b", 10, 10)))
    assert s.same_content(entry(("1,b", 10, 10), ("1,a", 0, 10), mode=0o600))
    assert not s.same_content(entry(("1,a", 0, 10)))


def test_inline_bytes_are_the_content_until_changed() -> None:
    e = PB["Entry"](name="f", content=b"hello")
    s = EntryState(e)
    assert s.inline_content() == b"hello" and s.size == 5
    s.set_attributes({"file_mode": 0o600})
    assert s.to_send(1).content == b"hello"  # a metadata change keeps them
    s.add_chunks([chunk("3,c", 0, 5)])
    out = s.to_send(1)
    assert out.content == b"" and chunk_fids(out) == ["3,c"]


def test_only_attributes_a_handle_sets_are_accepted() -> None:
    with pytest.raises(ValueError):
        EntryState(entry()).set_attributes({"file_size": 3})


def test_to_send_adding_lays_chunks_on_top_and_changes_nothing() -> None:
    base = PB["Entry"](name="f")
    base.chunks.add(file_id="1,a", offset=0, size=100, modified_ts_ns=1)
    base.attributes.file_size = 100
    s = EntryState(base)
    version = s.version
    new = PB["FileChunk"](file_id="2,b", offset=100, size=50, modified_ts_ns=2)
    out = s.to_send(9_000_000_000, adding=[new])
    assert [c.file_id for c in out.chunks] == ["1,a", "2,b"]
    assert out.attributes.file_size == 150 and out.attributes.mtime == 9
    assert out.attributes.ctime == 9
    # Nothing changed here: the merged view and the size are still the base's.
    assert s.version == version and not s.dirty and s.size == 100
    assert [c.file_id for c in s.view().chunks] == ["1,a"]
    # Once added, the same entry is what to_send gives.
    s.add_chunks([new])
    assert s.to_send(9_000_000_000) == out


def test_committed_keeps_chunks_added_after_the_entry_was_built() -> None:
    """An upload that ends while the entry is being written (another handle's write) is
    not dropped by the commit: it stays a change, for the next commit."""
    s = EntryState(PB["Entry"](name="f"))
    s.add_chunks([PB["FileChunk"](file_id="1,a", offset=0, size=10, modified_ts_ns=1)])
    sent = s.to_send(1)
    s.add_chunks([PB["FileChunk"](file_id="1,b", offset=10, size=10, modified_ts_ns=2)])
    s.committed(sent)
    assert s.base_fids == ["1,a"]
    assert s.dirty and s.bytes_changed and s.size == 20
    assert [c.file_id for c in s.to_send(2).chunks] == ["1,a", "1,b"]
    s.committed(s.to_send(2))
    assert not s.dirty and s.base_fids == ["1,a", "1,b"]
