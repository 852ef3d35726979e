"""Open files: sequential-access detection and a bounded read-ahead window per handle.

A sequential reader (each read starting where the last ended) is served from a window of
``readahead`` bytes fetched in one engine batch, and the next window is fetched in the
background while the current one is consumed, so the kernel's 128 KiB-1 MiB requests
rarely wait on the network. Random reads fetch exactly what was asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..reader import FileView

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
        self._next_offset = -1
        self._streak = 0
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
        sequential = offset == self._next_offset
        self._streak = self._streak + 1 if sequential else 0
        self._next_offset = offset + size
        for w in self._windows:
            if w.covers(offset, size):
                await w.done.wait()
                if w.error is None and w.data is not None:
                    self._prefetch_after(w, fetch, nursery)
                    return w.data[offset - w.start:offset - w.start + size]
        if self._streak >= 1 and self.readahead > size:
            w = self._start(offset, min(self.readahead, self.size - offset), fetch, nursery)
            await w.done.wait()
            if w.error is None and w.data is not None:
                self._prefetch_after(w, fetch, nursery)
                return w.data[:size]
        return await fetch(self.view, offset, size)

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
        if self._streak < 1 or nxt >= self.size:
            return
        if any(x.start == nxt for x in self._windows):
            return
        self._start(nxt, min(self.readahead, self.size - nxt), fetch, nursery)
