"""The mount's file ids asked for ahead (``uploads.Uploader``'s pool): taken oldest first
while fresh, and a refill asked for once when the fresh ones run low."""

from __future__ import annotations

import time

from seaweed_rdma.filer_grpc import Assignment, FilerGrpc
from seaweed_rdma.mount import uploads
from seaweed_rdma.mount.uploads import ASSIGN_BATCH, Uploader, WriteOptions


def _ids(n: int, tag: str) -> tuple[Assignment, ...]:
    return tuple(Assignment(f"3,{tag}{i:04x}", "127.0.0.1:1", "127.0.0.1:1", "")
                 for i in range(n))


def _uploader() -> Uploader:
    # No call reaches the filer here: only the pool is used.
    return Uploader(FilerGrpc("127.0.0.1:1"), WriteOptions(concurrent_writers=4))


def test_refill_is_asked_once_when_fresh_ids_run_low() -> None:
    up = _uploader()
    up._pool_add("/d/f", _ids(ASSIGN_BATCH, "a"))
    assert not up.needs_refill("/d/g")
    taken = [up.pooled("/d/g") for _ in range(ASSIGN_BATCH - ASSIGN_BATCH // 4 + 1)]
    assert [a.file_id for a in taken if a] == [f"3,a{i:04x}" for i in range(len(taken))]
    assert up.needs_refill("/d/h")  # fewer than a quarter of a batch left
    assert not up.needs_refill("/d/h")  # asked for already: once until refill ends
    up._assign_batch = lambda path: _ids(ASSIGN_BATCH, "c")  # type: ignore[method-assign]
    up.refill("/d/h")
    assert not up.needs_refill("/d/h")  # a fresh batch at hand
    assert up.pooled("/d/h").file_id.startswith("3,a")  # type: ignore[union-attr]
    assert up.needs_refill("/other/x")  # another directory has none at all


def test_ids_about_to_go_stale_do_not_count(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    up = _uploader()
    up._pool_add("/d/f", _ids(ASSIGN_BATCH, "b"))
    later = time.monotonic() + uploads.ASSIGNMENT_FRESH_S - uploads.REFILL_AHEAD_S + 0.5
    monkeypatch.setattr(uploads.time, "monotonic", lambda: later)
    assert up.needs_refill("/d/f")
    assert up.pooled("/d/f") is not None  # still fresh enough to use
    monkeypatch.setattr(uploads.time, "monotonic", lambda: later + uploads.REFILL_AHEAD_S)
    assert up.pooled("/d/f") is None  # stale now: dropped
