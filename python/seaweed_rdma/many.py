"""Many files in one go: every file's plain extents in one engine batch (grouped by sidecar
by the engine, many requests in flight per connection, the GIL released once), then what
the fast path did not deliver and the whole chunks (compressed, encrypted) over the slower
paths, in parallel. One file's failure is that file's result; the others still arrive.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidRange, SeaweedRdmaError
from .fastpath import RangeRequest
from .reader import FileView, ReadPath, ReadWork

# Files are read in groups of at most this many bytes (one buffer, one engine batch each).
GROUP_BYTES = 16 << 20
# A file this large is read on its own, straight into its result (as ``Client.read``):
# copying it out of a group buffer would cost more than its own round trip.
LARGE = 512 << 10

# Each thread reuses its group buffer: fresh memory costs a page fault per 4 KiB on first
# touch, which for small files costs more than the reads themselves.
_scratch = threading.local()


def _buffer(size: int) -> bytearray:
    buf: bytearray | None = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < size:
        buf = _scratch.buf = bytearray(max(size, GROUP_BYTES))
    return buf


@dataclass
class _Item:
    """One file of a group: where it lies in the group's buffer and what is left of it."""

    index: int
    view: FileView
    at: int
    n: int
    work: ReadWork | None = None
    error: BaseException | None = None


def _groups(views: list[tuple[int, FileView]], limit: int) -> list[list[tuple[int, FileView]]]:
    out: list[list[tuple[int, FileView]]] = []
    size = 0
    for iv in views:
        n = iv[1].size
        if not out or size + n > limit:
            out.append([])
            size = 0
        out[-1].append(iv)
        size += n
    return out


def read_views(reader: ReadPath, views: list[FileView | BaseException],
               limits: list[int] | None = None, group_bytes: int = GROUP_BYTES
               ) -> list[bytes | BaseException]:
    """Each view's content from offset 0 (at most ``limits[i]`` bytes, when given) as
    ``bytes``, or the exception that kept it from being read (an exception given in place
    of a view is passed through)."""
    out: list[bytes | BaseException] = [v if isinstance(v, BaseException) else b""
                                        for v in views]
    todo = [(i, v) for i, v in enumerate(views) if isinstance(v, FileView)]
    small = [(i, v) for i, v in todo if _want(v, i, limits) < LARGE]
    for group in _groups(small, group_bytes):
        for i, result in _read_group(reader, group, limits):
            out[i] = result
    for i, v in todo:
        if _want(v, i, limits) >= LARGE:
            try:
                out[i] = reader.read(v, 0, _want(v, i, limits))
            except SeaweedRdmaError as e:
                out[i] = e
    return out


def _want(view: FileView, i: int, limits: list[int] | None) -> int:
    return view.size if limits is None else min(view.size, limits[i])


def _read_group(reader: ReadPath, group: list[tuple[int, FileView]],
                limits: list[int] | None) -> list[tuple[int, bytes | BaseException]]:
    items: list[_Item] = []
    at = 0
    for i, view in group:
        n = view.read_len(0, view.size if limits is None else limits[i])
        items.append(_Item(i, view, at, n))
        at += n
    mv = memoryview(_buffer(at))[:at]
    ranged: list[RangeRequest] = []
    for it in items:
        reader.stats.count("file_reads")
        try:
            it.work = reader.prepare(it.view, mv[it.at:it.at + it.n], 0)
        except SeaweedRdmaError as e:
            it.error = e
            continue
        ranged += [RangeRequest(r.chunk, r.in_chunk, r.length, r.buf_offset + it.at)
                   for r in it.work.ranged]
    undelivered = ranged
    if reader.fast is not None and ranged:
        undelivered = reader.fast.read_ranges(mv, ranged)
    starts = [it.at for it in items]
    missed: dict[int, list[RangeRequest]] = {}
    for r in undelivered:
        k = bisect.bisect_right(starts, r.buf_offset) - 1
        missed.setdefault(k, []).append(r)
    jobs: list[tuple[_Item, Callable[[], None]]] = []
    for k, it in enumerate(items):
        if it.work is None:
            continue
        sub = mv[it.at:it.at + it.n]
        local = [RangeRequest(r.chunk, r.in_chunk, r.length, r.buf_offset - it.at)
                 for r in missed.get(k, [])]
        try:
            jobs += [(it, job) for job in reader.slow_jobs(it.work, sub, local)]
        except SeaweedRdmaError as e:  # HTTP fallback refused (fallback=False)
            it.error = e
    _run_all(reader, jobs)
    results: list[tuple[int, bytes | BaseException]] = []
    for it in items:
        if it.error is not None:
            reader.stats.count("errors")
            results.append((it.index, it.error))
        elif it.work is not None and it.work.n != it.n:
            results.append((it.index, InvalidRange(
                f"{it.view.entry.path}: read {it.work.n} bytes where {it.n} were planned")))
        else:
            results.append((it.index, bytes(mv[it.at:it.at + it.n])))
    mv.release()
    return results


def _run_all(reader: ReadPath, jobs: list[tuple[_Item, Callable[[], None]]]) -> None:
    """Runs every file's slow jobs at once; a failure is recorded against its file."""
    def guarded(it: _Item, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if it.error is not None:
                return
            try:
                job()
            except Exception as e:  # this file's failure; the batch goes on
                it.error = e
        return run

    reader.run_jobs([guarded(it, job) for it, job in jobs])
