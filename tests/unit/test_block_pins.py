"""A cached block's buffer is never recycled while a reader holds it, however hard the
cache is pressed; once evicted and unpinned it goes back to the pool."""

from __future__ import annotations

import mmap

import trio

from seaweed_rdma.mount.blocks import BLOCK, BlockCache, Run


def _fill(cache: BlockCache, index: int, byte: int) -> tuple[object, mmap.mmap]:
    key = ("/f", 1, 10 * BLOCK, index)
    b = cache.reserve(key)
    buf = cache.take(BLOCK)
    buf[:] = bytes([byte]) * BLOCK
    b.run = Run(buf, 1)
    cache.filled(key, b, memoryview(buf))
    return b, buf


def test_pinned_block_survives_eviction_until_unpinned() -> None:
    async def main() -> None:
        cache = BlockCache(0)  # four blocks at least
        first, first_buf = _fill(cache, 0, 0xAA)
        cache.pin([first])  # type: ignore[list-item]
        for i in range(1, 12):  # press it out of the cache
            _, buf = _fill(cache, i, i)
            assert buf is not first_buf, "a pinned block's buffer was handed out again"
        assert cache.get(("/f", 1, 10 * BLOCK, 0)) is None  # evicted...
        assert bytes(first.data[:4]) == b"\xaa" * 4  # type: ignore[attr-defined]
        cache.unpin([first])  # type: ignore[list-item]
        assert cache.take(BLOCK) is first_buf  # ...and recycled only now

    trio.run(main)


def test_cache_stays_bounded() -> None:
    async def main() -> None:
        cache = BlockCache(6 * BLOCK)
        for i in range(40):
            _fill(cache, i, i)
        assert cache.used <= 6 * BLOCK and len(cache) <= 6

    trio.run(main)
