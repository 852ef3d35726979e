"""Open files: sequential-access detection and a bounded read-ahead window per handle.

A sequential reader (each read starting near where the last ended) is served from a window of
``readahead`` bytes fetched in one engine batch, and the next window is fetched in the
background while the current one is consumed, so the kernel's 128 KiB-1 MiB requests
rarely wait on the network. Random reads fetch exactly what was asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..reader import FileView

NEAR = 2 << 20  # how far from the last read a request still counts as sequential
Fetch = Callable[[FileView, int, int], Awaitable[memoryview]]


@dataclass
class Window:
    """Bytes ``[start, start+len(data))`` of the file, or a fetch still running."""

    start: int
    size: int
    data: memoryview | None = None
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None

    def covers(self, offset: int, size: int) -> bool:
        return self.start <= offset and offset + size <= self.start + self.size


class OpenFile:
    """One open file handle."""

    def __init__(self, path: str, inode: int, view: FileView, readahead: int) -> None:
        self.path = path
        self.inode = inode
        self.view = view
        self.readahead = readahead
        self._next_offset = 0
        self._windows: list[Window] = []

    @property
    def size(self) -> int:
        return self.view.size

    async def read(self, offset: int, size: int, fetch: Fetch, nursery: trio.Nursery
                   ) -> memoryview:
        """Bytes for a FUSE read; short at end of file."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return memoryview(b"")
        # The kernel's read-ahead sends several requests at once, so "sequential" means
        # near where the reader has been, not exactly at the last end.
        near = abs(offset - self._next_offset) <= NEAR or offset == 0
        self._next_offset = max(self._next_offset, offset + size)
        for w in self._windows:
            if w.covers(offset, size):
                data = await self._wait(w)
                if data is not None:
                    if offset - w.start >= w.size // 2:
                        self._prefetch_after(w, fetch, nursery)
                    return data[offset - w.start:offset - w.start + size]
        if near and self.readahead > size:
            w = self._start(offset, min(self.readahead, self.size - offset), fetch, nursery)
            data = await self._wait(w)
            if data is not None:
                return data[:size]
        return await fetch(self.view, offset, size)

    @staticmethod
    async def _wait(w: Window) -> memoryview | None:
        await w.done.wait()
        return w.data if w.error is None else None

    def _start(self, start: int, size: int, fetch: Fetch, nursery: trio.Nursery) -> Window:
        w = Window(start, size)
        self._windows = [*[x for x in self._windows if x.start + x.size > start][-2:], w]

        async def run() -> None:
            try:
                w.data = await fetch(self.view, start, size)
            except BaseException as e:  # surfaced to the reader that waits on it
                w.error = e
                if not isinstance(e, Exception):
                    raise
            finally:
                w.done.set()

        nursery.start_soon(run)
        return w

    def _prefetch_after(self, w: Window, fetch: Fetch, nursery: trio.Nursery) -> None:
        nxt = w.start + w.size
        if nxt >= self.size:
            return
        if any(x.start == nxt for x in self._windows):
            return
        self._start(nxt, min(self.readahead, self.size - nxt), fetch, nursery)
