"""Block reads through the mount: the one owner of cached file blocks (``BlockCache``),
shared by the block reader of every open read handle (``OpenFile``), filled in batches.

Every FUSE read is served from 1 MiB blocks of the file kept in one LRU cache for the whole
mount (bounded by ``-cacheCapacityMB``, as ``weed mount``'s chunk cache is). Missing blocks
of a request are fetched in one engine batch; when a handle reads sequentially (near where
it read last: the kernel's read-ahead sends several requests at once, so not exactly at
the last end) the next ``readahead`` bytes are fetched in the background, so sequential
readers rarely wait on the network. Random readers use cached blocks when they are there
and otherwise read exactly what they asked for (a whole block per 4 KiB miss costs more
than it saves).
"""

from __future__ import annotations

import mmap
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..reader import FileView

BLOCK = 1 << 20
NEAR = 2 << 20
# Fills the buffer from the file offset; returns how many bytes it read.
Fetch = Callable[[FileView, int, memoryview], Awaitable[int]]
Key = tuple[str, int, int, int]  # path, mtime_ns, size, block index


@dataclass
class Run:
    """The buffer one fetch filled; it goes back to the pool once none of its blocks is
    cached or pinned by a reader any more."""

    buf: mmap.mmap
    live: int


@dataclass
class Block:
    """One cached block, or a fetch still running.

    ``pins`` counts readers that hold the block between taking it and copying its bytes
    out. Those readers await (other blocks, or ``done.wait()``, which yields even when set),
    so the block can be evicted meanwhile; its buffer is recycled only once it is both
    evicted and unpinned, or a later fetch would overwrite bytes a reader is about to copy.
    """

    data: memoryview | None = None
    done: trio.Event = field(default_factory=trio.Event)
    failed: bool = False
    run: Run | None = None
    pins: int = 0
    evicted: bool = False


class BlockCache:
    """LRU of file blocks, bounded in bytes, shared by every open file of the mount."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 4 * BLOCK)
        self._used = 0
        self._blocks: OrderedDict[Key, Block] = OrderedDict()
        self.hits = 0
        self.misses = 0
        # A fresh bytearray is zeroed on the trio thread (~0.5 ms per MiB, as much as
        # fetching the bytes). Anonymous mappings are zeroed lazily by the kernel as the
        # engine's threads write into them, and buffers are recycled on eviction.
        self._free: dict[int, list[mmap.mmap]] = {}

    def take(self, size: int) -> mmap.mmap:
        """A writable buffer of exactly ``size`` bytes (contents undefined)."""
        free = self._free.get(size)
        return free.pop() if free else mmap.mmap(-1, size)

    def _give(self, buf: mmap.mmap) -> None:
        free = self._free.setdefault(len(buf), [])
        if len(free) < 8:
            free.append(buf)

    def get(self, key: Key) -> Block | None:
        b = self._blocks.get(key)
        if b is not None:
            self._blocks.move_to_end(key)
        return b

    def reserve(self, key: Key) -> Block:
        b = Block()
        self._blocks[key] = b
        return b

    def filled(self, key: Key, b: Block, data: memoryview | None) -> None:
        b.data = data
        b.failed = data is None
        b.done.set()
        if data is None:
            if self._blocks.get(key) is b:
                del self._blocks[key]
            return
        self._used += len(data)
        # Pending blocks cannot be evicted; stop once only those are left over the bound.
        for old_key in list(self._blocks):
            if self._used <= self.capacity or len(self._blocks) <= 1:
                break
            old = self._blocks[old_key]
            if old.done.is_set():
                self._evict(old_key, old)

    def invalidate_path(self, path: str) -> int:
        """Drops the finished blocks of every version of ``path`` (the file changed, was
        written through the mount or by another client); returns how many. Blocks still
        being fetched stay: their keys name the old version, which nothing asks for."""
        dropped = 0
        for key in [k for k in self._blocks if k[0] == path]:
            b = self._blocks[key]
            if b.done.is_set():
                self._evict(key, b)
                dropped += 1
        return dropped

    def _evict(self, key: Key, b: Block) -> None:
        """Drops a finished block (pinned ones are released when their reader unpins)."""
        del self._blocks[key]
        self._used -= len(b.data or b"")
        b.evicted = True
        self._release(b)

    @staticmethod
    def pin(blocks: list[Block]) -> None:
        """Marks ``blocks`` as being read: their buffers are not recycled until ``unpin``."""
        for b in blocks:
            b.pins += 1

    def unpin(self, blocks: list[Block]) -> None:
        """Ends a ``pin``; an evicted block's buffer may go back to the pool now."""
        for b in blocks:
            b.pins -= 1
            self._release(b)

    def _release(self, b: Block) -> None:
        if not b.evicted or b.pins or b.run is None:
            return
        run, b.run = b.run, None
        run.live -= 1
        if run.live == 0:
            self._give(run.buf)

    @property
    def used(self) -> int:
        """Bytes held by cached blocks."""
        return self._used

    def __len__(self) -> int:
        return len(self._blocks)


class OpenFile:
    """One open file handle."""

    def __init__(self, path: str, inode: int, view: FileView, readahead: int,
                 cache: BlockCache) -> None:
        self.path = path
        self.inode = inode
        self.view = view
        self.readahead = max(readahead, BLOCK)
        self.cache = cache
        self._next_offset = 0
        self._version = (view.entry.mtime_ns, view.size)

    @property
    def size(self) -> int:
        return self.view.size

    def _key(self, index: int) -> Key:
        return (self.path, self._version[0], self._version[1], index)

    async def read(self, offset: int, size: int, fetch: Fetch, nursery: trio.Nursery
                   ) -> memoryview:
        """Bytes for a FUSE read; short at end of file."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return memoryview(b"")
        near = abs(offset - self._next_offset) <= NEAR or offset == 0
        self._next_offset = max(self._next_offset, offset + size)
        first, last = offset // BLOCK, (offset + size - 1) // BLOCK
        if not near:
            # A random reader: use blocks already cached, else read exactly the range
            # (a whole block per 4 KiB miss would cost more than it saves).
            cached = [self.cache.get(self._key(i)) for i in range(first, last + 1)]
            if not all(b is not None and b.done.is_set() and not b.failed for b in cached):
                self.cache.misses += 1
                return await self._exact(fetch, offset, size)
            self.cache.hits += 1
            return self._assemble(cached, offset, size)  # type: ignore[arg-type]
        blocks = self._ensure(first, last, fetch, nursery)
        window = self.readahead // BLOCK
        end = (self.size - 1) // BLOCK
        # Refill the read-ahead only when its second half is missing, so it is fetched in
        # batches of half a window rather than a block at a time.
        probe = min(last + 1 + window // 2, end)
        if probe > last and self.cache.get(self._key(probe)) is None:
            self._ensure(last + 1, min(last + window, end), fetch, nursery)
        self.cache.pin(blocks)
        try:
            for b in blocks:
                await b.done.wait()
            if not any(b.failed for b in blocks):
                # No checkpoint between here and pyfuse3's copy of the reply: the view
                # stays valid although the pins go before the bytes are sent.
                return self._assemble(blocks, offset, size)
        finally:
            self.cache.unpin(blocks)
        return await self._exact(fetch, offset, size)  # raises the real error, or succeeds

    @staticmethod
    def _assemble(blocks: list[Block], offset: int, size: int) -> memoryview:
        start = offset - (offset // BLOCK) * BLOCK
        if len(blocks) == 1:
            data = blocks[0].data
            assert data is not None
            return data[start:start + size]
        joined = b"".join(bytes(b.data or b"") for b in blocks)
        return memoryview(joined)[start:start + size]

    async def _exact(self, fetch: Fetch, offset: int, size: int) -> memoryview:
        buf = memoryview(bytearray(size))
        n = await fetch(self.view, offset, buf)
        return buf[:n]

    def _ensure(self, first: int, last: int, fetch: Fetch, nursery: trio.Nursery
                ) -> list[Block]:
        """The blocks ``first..last``; missing runs are fetched, one batch per run."""
        out: list[Block] = []
        run: list[tuple[int, Block]] = []
        for index in range(first, last + 1):
            b = self.cache.get(self._key(index))
            if b is None:
                self.cache.misses += 1
                b = self.cache.reserve(self._key(index))
                run.append((index, b))
            else:
                self.cache.hits += 1
                if run:
                    self._fetch_run(run, fetch, nursery)
                    run = []
            out.append(b)
        if run:
            self._fetch_run(run, fetch, nursery)
        return out

    def _fetch_run(self, run: list[tuple[int, Block]], fetch: Fetch, nursery: trio.Nursery
                   ) -> None:
        start = run[0][0] * BLOCK
        length = min(len(run) * BLOCK, self.size - start)

        async def go() -> None:
            buf = self.cache.take(length)
            data: memoryview | None = None
            try:
                n = await fetch(self.view, start, memoryview(buf))
                data = memoryview(buf)[:n]
            except Exception:  # readers waiting on these blocks retry and see the error
                data = None
            holder = Run(buf, len(run)) if data is not None else None
            for i, (index, b) in enumerate(run):
                b.run = holder
                piece = data[i * BLOCK:(i + 1) * BLOCK] if data is not None else None
                self.cache.filled(self._key(index), b, piece)

        nursery.start_soon(go)
