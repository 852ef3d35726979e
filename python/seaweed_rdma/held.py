"""Held metadata: the one owner of the filer entries a Client keeps between reads.

A path asked for once is fetched (``?metadata=true``) and held. A directory from which a
second path is asked for is listed whole (paged) and held, so reading the files of a
directory costs one listing rather than one request per file. A name not held is always
asked for (it may have just been made elsewhere). Held entries
stay fresh through the filer's metadata stream (``metastream``), which replays from before
the first fetch (the Client starts it at the second fetch, or a second after the first):
an overwrite, delete or rename by any writer drops what is held of it as
soon as its event arrives, and the next lookup fetches it again. While the stream is down
(or cannot run), entries expire ``ttl`` seconds after they were fetched, as a plain cache
would. The set is bounded by
entry count and an estimate of bytes, least recently used first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFound, SeaweedRdmaError
from .filer import Entry, FilerClient
from .reader import FileView


def _parent(path: str) -> tuple[str, str]:
    head, _, name = path.rpartition("/")
    return head or "/", name


def _child(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _version(e: Entry) -> tuple[Any, ...]:
    """What tells two versions of an entry apart, the same whether it came from the filer's
    HTTP API or from a metadata event."""
    return (e.mode, e.uid, e.gid, e.file_size, tuple(c.file_id for c in e.chunks),
            e.content or b"", e.symlink_target, e.mtime_ns // 1_000_000_000)


def _cost(entry: Entry) -> int:
    """Rough bytes an entry holds in memory."""
    return 256 + 96 * len(entry.chunks) + len(entry.content or b"") + len(entry.path)


@dataclass
class _Held:
    entry: Entry
    view: FileView | None
    at: float
    cost: int


@dataclass
class _Dir:
    names: set[str] = field(default_factory=set)
    at: float = 0.0
    complete: bool = False
    # Names dropped since the listing (``drop``: a change here, or one the mount's own
    # event follower announced): whether they exist is not known, so they are asked for
    # one by one; the other names still prove absence.
    unsure: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class HeldLimits:
    """How much is held and for how long without a live stream."""

    ttl: float = 1.0
    max_entries: int = 200_000
    max_bytes: int = 128 << 20
    list_dirs: bool = True  # hold directories whole (absences included); False: paths only
    list_after: int = 2  # lookups in one directory before it is listed whole
    max_list: int = 100_000  # a larger directory is not held whole


class HeldMetadata:
    """Entries by path, directories listed whole, kept fresh by metadata events."""

    def __init__(self, filer: FilerClient, limits: HeldLimits,
                 start_stream: Callable[[], None] | None = None,
                 on_listed: Callable[[list[Entry]], object] | None = None) -> None:
        self._filer = filer
        self._fetch: Callable[[str], Entry] | None = None  # one entry, if not the filer's
        self._limits = limits
        self._start_stream = start_stream
        # Told each directory listed whole (outside the lock), e.g. to learn where its
        # files' volumes are before the first of them is read.
        self._on_listed = on_listed
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Held] = OrderedDict()
        self._bytes = 0
        self._dirs: dict[str, _Dir] = {}
        # Names under each directory that lead to something held, for dropping subtrees.
        self._children: dict[str, set[str]] = {}
        self._lookups: dict[str, int] = {}
        # Bumped by every event under a directory: a fetch that raced one is not held.
        self._gen: dict[str, int] = {}
        # Bumped whenever a path itself (or a directory above it) is dropped.
        self._own: dict[str, int] = {}
        self._stream_up = False
        # Listings under way: a thread that needs the same directory waits for that one.
        self._listing: dict[str, threading.Event] = {}
        self.counts = {"hits": 0, "fetches": 0, "listings": 0, "held_absent": 0,
                       "not_held_links": 0,
                       "events": 0, "evictions": 0}

    # -- freshness ----------------------------------------------------------------------

    def stream_state(self, up: bool) -> None:
        """The metadata stream came up (events will reach us) or broke (TTL applies)."""
        with self._lock:
            self._stream_up = up

    def _fresh(self, at: float) -> bool:
        if self._limits.ttl <= 0:
            return False  # nothing is held: every lookup asks the filer
        return self._stream_up or time.monotonic() - at < self._limits.ttl

    # -- lookups ------------------------------------------------------------------------

    def get(self, path: str) -> tuple[Entry, FileView | None]:
        """The entry at ``path`` (normalized) and its planned view, if any: held, or
        fetched and held. Raises ``NotFound``."""
        parent = _parent(path)[0]
        with self._lock:
            held = self._entries.get(path)
            if held is not None and self._fresh(held.at):
                self._entries.move_to_end(path)
                self.counts["hits"] += 1
                return held.entry, held.view
            # A name a held directory lacks is still asked for: another client may have just
            # made it, and its event may not be here yet (a reader told "it is written" must
            # find it). Only a listing made for this very lookup answers an absence.
            d = self._dirs.get(parent)
            seen = self._lookups[parent] = self._lookups.get(parent, 0) + 1
            listed = d is not None and d.complete and self._fresh(d.at)
        if self._start_stream is not None:  # before the filer is asked (see Client)
            self._start_stream()
        if path != "/" and not listed and self._limits.list_dirs \
                and self._limits.ttl > 0 and seen >= self._limits.list_after:
            self._list(parent)
            with self._lock:
                held = self._entries.get(path)
                d = self._dirs.get(parent)
                if held is not None:
                    return held.entry, held.view
                if d is not None and d.complete and _parent(path)[1] not in d.names:
                    self.counts["held_absent"] += 1
                    raise NotFound(f"{path}: no such file or directory on filer "
                                   f"{self._filer.address}")
        gen = self._gen.get(parent, 0)
        try:
            fetch = self._fetch if self._fetch is not None and path != "/" \
                else self._filer.get_entry
            entry = fetch(path)
        except NotFound:
            with self._lock:
                self.counts["fetches"] += 1
                d = self._dirs.get(parent)
                if d is not None and self._gen.get(parent, 0) == gen:
                    name = _parent(path)[1]
                    d.names.discard(name)  # known absent now
                    d.unsure.discard(name)
            raise
        with self._lock:
            self.counts["fetches"] += 1
            if self._gen.get(parent, 0) == gen:
                self._put(entry)
        return entry, None

    def peek(self, path: str) -> tuple[Entry, FileView | None] | None:
        """The entry at ``path`` and its view if held and fresh; never asks the filer."""
        with self._lock:
            held = self._entries.get(path)
            if held is None or not self._fresh(held.at):
                return None
            self._entries.move_to_end(path)
            self.counts["hits"] += 1
            return held.entry, held.view

    def listdir(self, path: str) -> list[Entry]:
        """The entries of directory ``path`` (normalized), held whole."""
        for _ in range(2):
            held = self._held_listing(path)
            if held is not None:
                return held
            if self._start_stream is not None:
                self._start_stream()
            listed = self._list(path)
            if listed is not None:
                return listed
        return list(self._filer.iter_dir(path))  # listed by another thread, and changed

    def held_listing(self, path: str) -> list[Entry] | None:
        """The entries of directory ``path`` if it is held whole and fresh; never asks
        the filer."""
        return self._held_listing(path)

    def _held_listing(self, path: str) -> list[Entry] | None:
        with self._lock:
            d = self._dirs.get(path)
            if d is None or not d.complete or d.unsure or not self._fresh(d.at):
                return None
            out = [self._entries[_child(path, n)].entry for n in sorted(d.names)
                   if _child(path, n) in self._entries]
            if len(out) != len(d.names):
                return None
            self.counts["hits"] += 1
            return out

    def prefetch(self, paths: list[str], run: Callable[..., Any] = map) -> None:
        """Lists, once each, the directories in which ``paths`` (normalized) have at least
        ``list_after`` entries not held, so that looking them up then costs nothing;
        ``run`` maps over the directories (an executor's ``map`` lists them together)."""
        if not self._limits.list_dirs or self._limits.ttl <= 0:
            return
        if self._start_stream is not None:
            self._start_stream()
        wanted: dict[str, int] = {}
        with self._lock:
            for p in paths:
                held = self._entries.get(p)
                if held is None or not self._fresh(held.at):
                    parent = _parent(p)[0]
                    wanted[parent] = wanted.get(parent, 0) + 1
            dirs = [d for d, n in wanted.items() if n >= self._limits.list_after
                    and not self._whole(d)]
        list(run(self._try_list, dirs))

    def _whole(self, directory: str) -> bool:
        d = self._dirs.get(directory)
        return d is not None and d.complete and self._fresh(d.at)

    def _try_list(self, directory: str) -> None:
        # A failure here is each path's own lookup's to report.
        with contextlib.suppress(OSError, SeaweedRdmaError):
            self._list(directory)

    def _list(self, directory: str) -> list[Entry] | None:
        """Lists ``directory`` and holds it whole; ``None`` when another thread was
        listing it (this one waited for that listing instead)."""
        with self._lock:
            running = self._listing.get(directory)
            if running is None:
                done = self._listing[directory] = threading.Event()
        if running is not None:
            running.wait(60)
            return None
        try:
            return self._list_now(directory)
        finally:
            with self._lock:
                del self._listing[directory]
            done.set()

    def _list_now(self, directory: str) -> list[Entry]:
        gen = self._gen.get(directory, 0)
        entries = list(self._filer.iter_dir(directory))
        with self._lock:
            self.counts["listings"] += 1
            if self._gen.get(directory, 0) != gen or len(entries) > self._limits.max_list \
                    or not self._limits.list_dirs:
                return entries  # changed while listed, too large, or not wanted whole
            now = time.monotonic()
            # Whole until one of its entries is evicted (`_put` then says so).
            self._dirs[directory] = _Dir({e.name for e in entries}, now, True)
            for e in entries:
                self._put(e, now)
        if self._on_listed is not None:
            self._on_listed(entries)
        return entries

    def _put(self, entry: Entry, at: float | None = None) -> None:
        self._drop_entry(entry.path)
        directory, name = _parent(entry.path)
        d = self._dirs.get(directory)
        if d is not None:
            # It exists: a held listing names it, though its create event may come later
            # and then find it already shown (fetched before the event arrived).
            d.names.add(name)
            d.unsure.discard(name)
        if entry.hard_link_id:
            # One of several names of a file: a change through another name (its bytes,
            # its link count) sends no event for this one, so it is always asked for.
            self.counts["not_held_links"] += 1
            return
        path = entry.path
        while path != "/":
            parent, name = _parent(path)
            names = self._children.setdefault(parent, set())
            if name in names:
                break
            names.add(name)
            path = parent
        cost = _cost(entry)
        self._entries[entry.path] = _Held(entry, None, time.monotonic() if at is None else at,
                                          cost)
        self._bytes += cost
        while self._entries and (len(self._entries) > self._limits.max_entries
                                 or self._bytes > self._limits.max_bytes):
            path = next(iter(self._entries))
            self._drop_entry(path)
            self.counts["evictions"] += 1
            d = self._dirs.get(_parent(path)[0])
            if d is not None:
                d.complete = False  # an absent name no longer proves absence

    def attach(self, entry: Entry, view: FileView) -> None:
        """Keeps ``view`` with ``entry`` while that is still the version held."""
        with self._lock:
            held = self._entries.get(entry.path)
            if held is not None and held.entry is entry:
                held.view = view

    def remember(self, entry: Entry) -> None:
        """Holds ``entry``, learnt elsewhere (a listing); keeps the planned view of the
        same version."""
        with self._lock:
            held = self._entries.get(entry.path)
            if held is not None and held.view is not None \
                    and held.entry.mtime_ns == entry.mtime_ns \
                    and held.entry.chunks == entry.chunks:
                held.at = time.monotonic()
                return
            self._put(entry)

    def fetch_with(self, fetch: Callable[[str], Entry]) -> None:
        """Fetches single entries with ``fetch`` (raising ``NotFound``) instead of the
        filer's HTTP metadata GET: a mount that speaks gRPC to the filer anyway asks with
        ``LookupDirectoryEntry``, a third of the time."""
        self._fetch = fetch

    def generation(self, path: str) -> int:
        """A number that moves whenever ``path`` itself (or a directory above it) is
        dropped, by an event or a change here: equal before and after a call, nothing was
        announced of it meanwhile."""
        with self._lock:
            # A directory above dropped (moved or removed elsewhere) counts too, whether
            # or not anything under it was held.
            total = self._own.get(path, 0)
            while path != "/":
                path = _parent(path)[0]
                total += self._own.get(path, 0)
            return total

    def drop(self, path: str | None, subtree: bool = True) -> None:
        """Forgets ``path`` and (with ``subtree``) everything under it (``None``:
        everything). Its directory stays held whole for its other names: the next lookup
        of this one asks the filer for it alone, not for the directory again."""
        with self._lock:
            if path is None:
                self._entries.clear()
                self._dirs.clear()
                self._children.clear()
                self._bytes = 0
                return
            self._forget(path, subtree)
            directory, name = _parent(path)
            d = self._dirs.get(directory)
            if d is not None:
                d.unsure.add(name)  # what became of the name is not known

    def _drop_entry(self, path: str) -> _Held | None:
        held = self._entries.pop(path, None)
        if held is not None:
            self._bytes -= held.cost
            if path not in self._children:  # a leaf: nothing held is reached through it
                parent, name = _parent(path)
                names = self._children.get(parent)
                if names is not None:
                    names.discard(name)
        return held

    def _forget(self, path: str, subtree: bool = True) -> None:
        """Drops ``path`` (and, with ``subtree``, all held under it); a fetch of it, or a
        listing of its directory, already under way will not be held."""
        parent = _parent(path)[0]
        self._gen[parent] = self._gen.get(parent, 0) + 1
        self._gen[path] = self._gen.get(path, 0) + 1
        self._own[path] = self._own.get(path, 0) + 1
        self._drop_entry(path)
        if not subtree:
            return
        todo = [path]
        while todo:
            d = todo.pop()
            self._gen[d] = self._gen.get(d, 0) + 1
            self._dirs.pop(d, None)
            for name in self._children.pop(d, ()):
                child = _child(d, name)
                self._own[child] = self._own.get(child, 0) + 1
                self._drop_entry(child)
                todo.append(child)

    # -- events -------------------------------------------------------------------------

    def on_event(self, ev: Any) -> None:
        """Applies one metadata event: the names it touches are dropped (the next lookup
        fetches them), and their directories are no longer trusted to prove an absence.
        Nothing is taken from the event itself: the stream replays events from a little
        before it started, and an old event must not bring back an old version. An event
        that what is held already shows (a replayed one, as a rule) changes nothing."""
        from .filer_grpc import entry_from_pb

        n = ev.event_notification
        old = _child(ev.directory, n.old_entry.name) if n.old_entry.name else ""
        new_dir = n.new_parent_path or ev.directory
        new = _child(new_dir, n.new_entry.name) if n.new_entry.name else ""
        with self._lock:
            self.counts["events"] += 1
            new_shown = not new or self._shows(new, entry_from_pb(n.new_entry, new))
            old_shown = not old or old == new or self._shows(old, None)
            if new_shown and old_shown:
                return
            if old and old == new:
                # Changed in place (a write, a chmod; a directory's own times): the name
                # and whatever lies under a directory are unchanged.
                self._forget(old, subtree=False)
                return
            for directory, path in ((ev.directory, old), (new_dir, new)):
                if path:
                    self._forget(path)
                    d = self._dirs.get(directory)
                    if d is not None:
                        d.complete = False

    def _shows(self, path: str, entry: Entry | None) -> bool:
        """Whether what is held of ``path`` is ``entry`` (``None``: known absent)."""
        held = self._entries.get(path)
        if entry is None:
            directory, name = _parent(path)
            d = self._dirs.get(directory)
            return held is None and d is not None and d.complete and name not in d.names \
                and name not in d.unsure
        if held is None:
            # A directory held only as a listing: that it exists is all that is held.
            return entry.is_dir and path in self._dirs
        return _version(held.entry) == _version(entry)

    def stats(self) -> dict[str, Any]:
        """What is held and how lookups were answered."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes,
                    "directories": sum(d.complete for d in self._dirs.values()),
                    "stream_up": self._stream_up, **self.counts}
