"""The mount's shared block cache (``BlockCache``): get / reserve / filled and the bound on
its size. Behaviour only: how it recycles buffers is its own business."""

from __future__ import annotations

import pytest

pytest.importorskip("trio", reason="the mount's parts need trio")

from seaweed_rdma.mount.blocks import BLOCK, BlockCache


def key(i: int) -> tuple[str, int, int, int]:
    return ("/f", 1, 100 * BLOCK, i)


def fill(cache: BlockCache, i: int) -> None:
    cache.filled(key(i), cache.reserve(key(i)), memoryview(bytes([i % 256]) * BLOCK))


def test_reserve_then_filled() -> None:
    cache = BlockCache(16 * BLOCK)
    assert cache.get(key(0)) is None
    b = cache.reserve(key(0))
    assert cache.get(key(0)) is b and not b.done.is_set()
    cache.filled(key(0), b, memoryview(b"x" * BLOCK))
    got = cache.get(key(0))
    assert got is b and b.done.is_set() and not b.failed
    assert got.data is not None and bytes(got.data) == b"x" * BLOCK


def test_failed_fill_is_not_cached() -> None:
    cache = BlockCache(16 * BLOCK)
    b = cache.reserve(key(0))
    cache.filled(key(0), b, None)
    assert b.failed and b.done.is_set()
    assert cache.get(key(0)) is None


def test_size_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = BlockCache(4 * BLOCK)
    for i in range(4):
        fill(cache, i)
    cache.get(key(0))  # now the most recently used
    fill(cache, 4)
    assert cache.get(key(0)) is not None and cache.get(key(1)) is None
    for i in range(5, 10):
        fill(cache, i)
    present = [i for i in range(10) if cache.get(key(i)) is not None]
    assert len(present) <= 4 and 9 in present


def test_pending_blocks_are_never_evicted() -> None:
    cache = BlockCache(4 * BLOCK)
    pending = cache.reserve(key(100))
    for i in range(10):
        fill(cache, i)
    assert cache.get(key(100)) is pending and not pending.done.is_set()
    assert sum(cache.get(key(i)) is not None for i in range(10)) <= 4
