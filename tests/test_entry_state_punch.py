"""EntryState's fallocate transitions (issue 24, item 9): ``extend`` and ``punch``."""

from __future__ import annotations

from typing import Any

from seaweed_rdma.filer_grpc import PB
from seaweed_rdma.mount.entry_state import EntryState


def _chunk(fid: str, offset: int, size: int, ts: int = 1) -> Any:
    return PB["FileChunk"](file_id=fid, offset=offset, size=size, modified_ts_ns=ts)


def _base() -> Any:
    e = PB["Entry"](name="f")
    e.chunks.extend([_chunk("1,a", 0, 100), _chunk("1,b", 100, 100), _chunk("1,c", 200, 50)])
    e.attributes.file_size = 250
    return e


def test_punch_drops_chunks_wholly_inside_and_keeps_the_size() -> None:
    s = EntryState(_base())
    s.add_chunks([_chunk("2,d", 220, 30, ts=2)])
    s.punch(150, 250)
    fids = [c.file_id for c in s.view().chunks]
    assert fids == ["1,a", "1,b"]  # 1,c and 2,d were inside; 1,b only partly
    assert s.size == 250 and s.view().attributes.file_size == 250
    assert s.covered(150, 250) == [(150, 200)]
    assert s.bytes_changed and s.dirty


def test_punch_applies_to_a_new_base_and_ends_at_the_commit() -> None:
    s = EntryState(_base())
    s.punch(100, 200)
    fresh = _base()
    fresh.chunks.append(_chunk("3,e", 120, 10, ts=3))
    s.rebase(fresh)
    assert [c.file_id for c in s.view().chunks] == ["1,a", "1,c"]
    s.committed(s.to_send(5))
    assert [c.file_id for c in s.view().chunks] == ["1,a", "1,c"]
    assert not s.dirty


def test_extend_grows_only() -> None:
    s = EntryState(_base())
    s.extend(100)
    assert s.size == 250 and not s.dirty
    s.extend(4096)
    assert s.size == 4096 and s.view().attributes.file_size == 4096
    s.supersede()
    assert s.size == 250
