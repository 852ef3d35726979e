"""Directory times: the one owner of directory time changes not yet on the filer
(``DirTimes``, composed by the tree).

A directory's mtime and ctime move when a name in it is added, removed or renamed, as
POSIX asks and as ``weed mount`` does (it writes the directory's entry).

The filer does not move them itself, so the mount writes the directory's entry after such
a change. That write runs in the background, one at a time per directory and coalesced
(it waits ``GATHER_S`` first, so a burst of creates in one directory costs one or two
``UpdateEntry`` calls, not one per create), and the mount answers the directory's
attributes with the new times from here (``apply``) until it is done and for ``KEEP_S``
after, so a ``stat`` right after the change sees them, even one whose filer read started
before the write landed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from ..filer import Entry
from ..filer_grpc import FilerGrpc, FilerRpcError, split_path

log = logging.getLogger("seaweed_rdma.mount")

OffLoop = Callable[..., Awaitable[Any]]
KEEP_S = 10.0  # how long times stay answered from here after they were written
GATHER_S = 0.05  # a directory's write waits this long for more changes to join it


class DirTimes:
    """Pending directory time changes, by directory path; the only owner of them."""

    def __init__(self, grpc: FilerGrpc, off_loop: OffLoop,
                 on_written: Callable[[str, Any], None],
                 generation: Callable[[str], int]) -> None:
        self._grpc = grpc
        self._off_loop = off_loop
        # Told the entry written (None: not known to be the filer's): drops or replaces
        # what the mount held of the directory.
        self._on_written = on_written
        self._generation = generation  # moves when an event (or a change) drops a path
        self._pending: dict[str, int] = {}  # directory -> ns its times move to
        self._written: dict[str, tuple[int, float]] = {}  # directory -> (ns, written at)
        self._writing: set[str] = set()
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self.writes = 0

    def run_in(self, nursery: trio.Nursery) -> None:
        """Where time writes run, for the life of the mount (none start before)."""
        self._nursery = nursery

    def touch(self, directory: str, now_ns: int | None = None) -> None:
        """A name in ``directory`` changed now: its mtime and ctime move."""
        ns = now_ns if now_ns is not None else time.time_ns()
        self._pending[directory] = max(ns, self._pending.get(directory, 0))
        if directory not in self._writing and self._nursery is not None:
            self._writing.add(directory)
            self._nursery.start_soon(self._write, directory)

    def touch_parent(self, path: str) -> None:
        """``touch`` of the directory holding ``path``."""
        self.touch(split_path(path)[0])

    def moved(self, old: str, new: str) -> None:
        """A directory was renamed: its pending times follow it."""
        ns = self._pending.pop(old, None)
        self._written.pop(old, None)
        if ns is not None:
            self.touch(new, ns)

    def guard(self, path: str) -> trio.Lock:
        """The lock under which an entry's read-modify-write of ``path`` runs: this
        class's time writes take it, and so must every other change of a directory's
        entry here (a chmod between our lookup and our update would be undone)."""
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = trio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def holding(self, *paths: str) -> AsyncIterator[None]:
        """Holds the guards of ``paths`` (in one order, so two holders cannot deadlock),
        for a removal or a rename: a time write of a directory that goes meanwhile would
        otherwise write its entry back after it went (the filer's update also creates)."""
        wanted = sorted(set(paths))
        async with contextlib.AsyncExitStack() as stack:
            for p in wanted:
                await stack.enter_async_context(self.guard(p))
            yield
        for p in wanted:
            self._release_guard(p)

    def release_guard(self, path: str) -> None:
        """Forgets ``path``'s lock once nobody holds or waits for it."""
        self._release_guard(path)

    def _release_guard(self, path: str) -> None:
        lock = self._locks.get(path)
        if lock is not None and not lock.locked() and not lock.statistics().tasks_waiting:
            del self._locks[path]

    def drop(self, directory: str) -> None:
        """The directory's times were set explicitly (utimens): nothing kept here wins."""
        self._pending.pop(directory, None)
        self._written.pop(directory, None)

    def apply(self, entry: Entry) -> Entry:
        """``entry`` with the times set here (not yet on the filer, or written lately)."""
        ns = self._pending.get(entry.path)
        if ns is None:
            written = self._written.get(entry.path)
            if written is not None:
                if time.monotonic() - written[1] > KEEP_S:
                    del self._written[entry.path]
                else:
                    ns = written[0]
        if ns is None or ns <= entry.mtime_ns:
            return entry
        return dataclasses.replace(entry, mtime_ns=ns, ctime_ns=max(ns, entry.ctime_ns))

    async def _write(self, directory: str) -> None:
        try:
            await trio.sleep(GATHER_S)  # a burst of creates: one write for all of them
            while True:
                ns: int | None = None
                written = None
                try:
                    async with self.guard(directory):
                        # Read under the guard: times set explicitly meanwhile (utimens,
                        # which drops them here) must not be overwritten by ours.
                        ns = self._pending.get(directory)
                        if ns is None:
                            return
                        generation = self._generation(directory)
                        written = await self._off_loop(self._write_now, directory, ns)
                        if self._generation(directory) != generation:
                            written = None  # another client's change was announced
                except (FilerRpcError, OSError) as e:  # gone meanwhile, or the filer is
                    log.info("times of %s not written: %s", directory, e)
                finally:
                    self._release_guard(directory)
                if ns is not None and self._pending.get(directory) == ns:
                    del self._pending[directory]
                    self._written[directory] = (ns, time.monotonic())
                    self._on_written(directory, written)
                    self._expire()
        finally:
            self._writing.discard(directory)

    def _expire(self) -> None:
        now = time.monotonic()
        for d in [d for d, (_, at) in self._written.items() if now - at > KEEP_S]:
            del self._written[d]

    def _write_now(self, directory: str, ns: int) -> Any:
        """Blocking: moves the directory entry's mtime and ctime to ``ns`` (never back).
        Returns the entry as written (a protobuf), or None when nothing was written."""
        pb = self._grpc.lookup(directory) if directory != "/" else None
        if pb is None or not pb.is_directory:
            return None
        a = pb.attributes
        if a.mtime * 1_000_000_000 + a.mtime_ns >= ns:
            return None
        a.mtime, a.mtime_ns = divmod(ns, 1_000_000_000)
        a.ctime, a.ctime_ns = a.mtime, a.mtime_ns
        self._grpc.update(split_path(directory)[0], pb)
        self.writes += 1
        return pb
