"""The entry a file's writer builds on, and what it changed since: one owner for both.

The filer's ``UpdateEntry`` replaces the whole entry, and deletes the chunks the new one
no longer names. So a writer that sent the entry it read at open, after another client
had rewritten the file, would both undo that client's version and point the entry at
chunks the filer had just deleted. To never send what it did not read, a writer keeps:

- the *base*: the filer's version it last saw (read at open, followed through the
  metadata events, re-read when the filer refuses a write, or the one it last wrote);
- its *changes* since: chunks it uploaded, a truncation, a size it set, attribute and
  extended-attribute changes.

The entry it sends is always the base with its changes laid on top, under the filer's
``IF_CHUNKS_EQUAL`` condition on the base's chunks. A handle that changed no bytes sends
the base's chunks unchanged under that condition, which cannot alter them. When the base
moves (``rebase``) the changes are kept and laid over the new version; when another
client's content supersedes them (``supersede``), the byte changes are dropped, as
``weed mount`` drops a handle's unflushed pages when foreign content arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..filer_grpc import PB, chunk_fids

# Attribute fields a setattr may change (FuseAttributes names).
ATTRIBUTE_FIELDS = frozenset({"file_mode", "uid", "gid", "atime", "atime_ns", "mtime",
                              "mtime_ns", "ctime", "ctime_ns"})


def entry_size(entry: Any) -> int:
    """The size of a protobuf entry: its attribute, its chunks' end, or its inline bytes."""
    if entry.content and not entry.chunks:
        return len(entry.content)
    end = max((c.offset + c.size for c in entry.chunks), default=0)
    return max(int(entry.attributes.file_size), end)


def _inside(chunk: Any, start: int, end: int) -> bool:
    return bool(start <= chunk.offset and chunk.offset + chunk.size <= end)


def _copy(entry: Any) -> Any:
    out = PB["Entry"]()
    out.CopyFrom(entry)
    return out


class EntryState:
    """A file's base version and the changes made here since (see the module docs).
    Changes go through the named methods only; ``view`` is the merged entry for reads."""

    def __init__(self, base: Any) -> None:
        self._base = _copy(base)
        self._base_fids = chunk_fids(base)
        self._added: list[Any] = []  # chunks uploaded here since the last commit
        self._cut: int | None = None  # base chunks end here (a truncation made here)
        self._floor = 0  # a size set here (truncate, possibly growing the file)
        self._holes: list[tuple[int, int]] = []  # punched here: base chunks inside dropped
        self._bytes_changed = False  # mtime moves at the commit
        self._attrs: dict[str, int] = {}
        self._xattrs: dict[str, bytes | None] = {}
        self._view: Any | None = None
        self.version = 0  # moves whenever the merged chunks or size may have changed
        # True while the base is what this writer's last commit sent (not a version read
        # or announced): then it is surely the filer's, event or no event.
        self.base_is_ours = False

    # -- what it holds -----------------------------------------------------------------

    @property
    def base_fids(self) -> list[str]:
        """The chunk ids of the base, for the filer's ``IF_CHUNKS_EQUAL`` condition."""
        return list(self._base_fids)

    @property
    def dirty(self) -> bool:
        """True when a commit has something to send."""
        return bool(self._bytes_changed or self._attrs or self._xattrs)

    @property
    def bytes_changed(self) -> bool:
        """True when bytes or the size changed here since the last commit."""
        return self._bytes_changed

    @property
    def size(self) -> int:
        """The size of the merged entry."""
        return self._size_with(())

    def _size_with(self, adding: Sequence[Any]) -> int:
        base = entry_size(self._base)
        if self._cut is not None:
            base = min(base, self._cut)
        end = max((c.offset + c.size for c in [*self._added, *adding]), default=0)
        return max(base, end, self._floor)

    def inline_content(self) -> bytes | None:
        """The base's inline bytes while nothing here replaced them (else None)."""
        if self._bytes_changed or self._base.chunks or not self._base.content:
            return None
        return bytes(self._base.content)

    def same_content(self, entry: Any) -> bool:
        """True when ``entry`` holds the base's bytes (same chunks, inline bytes, size)."""
        return (sorted(chunk_fids(entry)) == sorted(self._base_fids)
                and entry.content == self._base.content
                and entry_size(entry) == entry_size(self._base))

    @property
    def mtime_set(self) -> bool:
        """True when an mtime was set here (utimens) after the last bytes written."""
        return "mtime" in self._attrs

    def has_xattr(self, key: str) -> bool:
        """Whether the merged entry has extended attribute ``key``."""
        if key in self._xattrs:
            return self._xattrs[key] is not None
        return key in self._base.extended

    def view(self) -> Any:
        """The merged entry (times of uncommitted changes not yet set); do not modify."""
        if self._view is None:
            self._view = self._merge()
        return self._view

    def to_send(self, now_ns: int, adding: Sequence[Any] = ()) -> Any:
        """The entry to write now: the merged one with its times moved for the changes.
        ``adding``: chunks being uploaded, laid on top as ``add_chunks`` will lay them
        (nothing here changes: the caller adds them once they are stored)."""
        e = _copy(self.view()) if not adding else self._merge(adding)
        changed = self._bytes_changed or bool(adding)
        a = e.attributes
        sec, ns = divmod(now_ns, 1_000_000_000)
        if changed:
            a.mtime, a.mtime_ns = sec, ns
        if changed or self._attrs or self._xattrs:
            a.ctime, a.ctime_ns = sec, ns
        for name, value in self._attrs.items():  # explicit times win over the above
            setattr(a, name, value)
        return e

    # -- changes made here ---------------------------------------------------------------

    def add_chunks(self, chunks: list[Any]) -> None:
        """Chunks uploaded here, laid over everything before them."""
        self._added.extend(chunks)
        self._bytes_changed = True
        self._changed()

    def truncate(self, size: int) -> None:
        """Sets the size: chunks are clipped at it (as weed mount does), or the file grows
        with a hole."""
        if size < self.size:
            self._cut = size if self._cut is None else min(self._cut, size)
            keep = []
            for c in self._added:
                if c.offset < size:
                    c.size = min(c.size, size - c.offset)
                    keep.append(c)
            self._added = keep
        self._floor = size
        self._bytes_changed = True
        self._changed()

    def extend(self, size: int) -> None:
        """``fallocate`` without KEEP_SIZE: the file grows to ``size`` with a hole (it
        never shrinks)."""
        if size > self.size:
            self._floor = size
            self._bytes_changed = True
            self._changed()

    def punch(self, start: int, end: int) -> None:
        """A hole punched (or a range zeroed) in ``[start, end)``: chunks wholly inside
        it are dropped (those of the base at the merge, so also on a new base), the size
        stays. The caller writes zeros over what other chunks still cover there."""
        self._floor = max(self._floor, self.size)
        self._holes.append((start, end))
        self._added = [c for c in self._added if not _inside(c, start, end)]
        self._bytes_changed = True
        self._changed()

    def covered(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that chunks of the merged entry cover (sorted,
        disjoint)."""
        out: list[tuple[int, int]] = []
        for c in sorted(self.view().chunks, key=lambda c: c.offset):
            lo, hi = max(start, c.offset), min(end, c.offset + c.size)
            if lo >= hi:
                continue
            if out and lo <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out

    def set_attributes(self, values: dict[str, int]) -> None:
        """Attribute changes (``ATTRIBUTE_FIELDS`` names), kept across rebases."""
        unknown = set(values) - ATTRIBUTE_FIELDS
        if unknown:
            raise ValueError(f"not an attribute a handle sets: {sorted(unknown)}")
        self._attrs.update(values)
        self._changed()

    def bytes_written(self) -> None:
        """Bytes were written: an mtime set here before them gives way to the write's."""
        if "mtime" in self._attrs:
            self._attrs.pop("mtime", None)
            self._attrs.pop("mtime_ns", None)
            self._changed()

    def set_xattr(self, key: str, value: bytes | None) -> None:
        """Sets (or, with None, removes) an extended attribute."""
        self._xattrs[key] = value
        self._changed()

    # -- the base moves --------------------------------------------------------------------

    def committed(self, sent: Any, ours: bool = True) -> None:
        """``sent`` is now the filer's version: it becomes the base, with no changes but
        chunks added after it was built (an upload that ended while it was being written:
        they go with the next commit). ``ours``: no other client's version was announced
        while it was being written (else the filer may hold a newer one already)."""
        fids = set(chunk_fids(sent))
        later = [c for c in self._added if c.file_id not in fids]
        self._base = _copy(sent)
        self._base_fids = chunk_fids(sent)
        self._added = later
        self._cut = None
        self._floor = 0
        self._holes = []
        self._bytes_changed = bool(later)
        self._attrs.clear()
        self._xattrs.clear()
        self.base_is_ours = ours
        self._changed()

    def rebase(self, fresh: Any) -> None:
        """The filer has ``fresh`` now: the changes made here go on top of it."""
        self.base_is_ours = False
        self._base = _copy(fresh)
        self._base_fids = chunk_fids(fresh)
        self._changed()

    def supersede(self) -> int:
        """Another client's content replaced the base: the byte changes made here (older
        than it) are dropped. Returns how many uploaded bytes that drops."""
        dropped = sum(c.size for c in self._added)
        self._added = []
        self._cut = None
        self._floor = 0
        self._holes = []
        self._bytes_changed = False
        self._changed()
        return dropped

    def _changed(self) -> None:
        self._view = None
        self.version += 1

    def _merge(self, adding: Sequence[Any] = ()) -> Any:
        e = _copy(self._base)
        if self._cut is not None:
            keep = []
            for c in e.chunks:
                if c.offset < self._cut:
                    c.size = min(c.size, self._cut - c.offset)
                    keep.append(c)
            del e.chunks[:]
            e.chunks.extend(keep)
        if self._holes:
            keep = [c for c in e.chunks
                    if not any(_inside(c, s, end) for s, end in self._holes)]
            del e.chunks[:]
            e.chunks.extend(keep)
        if self._bytes_changed or adding:
            # Inline bytes were turned into chunks by the writer before its first change.
            e.content = b""
            e.chunks.extend(self._added)
            e.chunks.extend(adding)
            e.attributes.file_size = self._size_with(adding)
        for key, value in self._xattrs.items():
            if value is None:
                e.extended.pop(key, None)
            else:
                e.extended[key] = value
        for name, number in self._attrs.items():
            setattr(e.attributes, name, number)
        return e
