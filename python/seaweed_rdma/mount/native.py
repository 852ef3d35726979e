"""Native reads in the mount: the Rust loop that answers READs of open files past
pyfuse3's trio thread (see ``seaweed_rdma._core.NativeReads`` and docs/operations.md,
"Native reads").

The loop is spliced into pyfuse3's session right after ``pyfuse3.init`` and answers
READs (and FLUSHes) of handles registered here at ``open``; everything else, and every READ
it cannot deliver in full, reaches the Python operations as before, which read over HTTP
what the fast path cannot. A handle is registered only when its bytes cannot differ from
what the file's chunks hold: not while the file is written through this mount.

It also answers read-only OPENs of inodes *offered* here (``offer``: a held, planned file
whose volumes are known, looked up while the metadata stream is up), and the RELEASEs of
the handles it opened so (numbers with ``NATIVE_FH`` set, which this side never hands
out). An offer may carry the file's name and attributes (``lookup_entry``): the loop then
answers LOOKUPs of that name too, and counts the references they give the kernel until
``take_lookups`` hands them to the inode table. Before the mount acts on any change to
such a file, it ``withdraw``s the offer and
takes over the loop's open handles of it (``handle_table.HandleTable.withdraw_native``);
a request that reaches the Python operations with a handle still the loop's (a READ the
loop could not serve) ``adopt``s that one.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .._core import ChunkRoute, NativeReads, parse_fid

if TYPE_CHECKING:
    import pyfuse3

    from ..client import Client
    from ..reader import FileView
    from .flags import MountOptions

log = logging.getLogger("seaweed_rdma.mount")

# Bound on every message between the kernel and libfuse through the loop (a WRITE, a READ
# that pyfuse3 answers): 1 MiB and headers, so requests stay as large as without the loop.
MAX_MESSAGE = (1 << 20) + (64 << 10)

# Set in every handle number the loop opens itself; this side counts up from 1.
NATIVE_FH = 1 << 63

# (parent inode, name, attributes, entry timeout, attribute timeout): see ``lookup_entry``.
LookupEntry = tuple[int, bytes, list[int], float, float]


def lookup_entry(parent: int, name: str, a: pyfuse3.EntryAttributes) -> LookupEntry:
    """What the loop answers a LOOKUP of ``name`` in directory ``parent`` with: the same
    attributes and timeouts the Python operations would give."""
    fields = [a.st_size, a.st_blocks, max(0, a.st_atime_ns), max(0, a.st_mtime_ns),
              max(0, a.st_ctime_ns), a.st_mode, a.st_nlink, a.st_uid, a.st_gid, a.st_rdev,
              a.st_blksize]
    return (parent, name.encode("utf-8"), fields, a.entry_timeout, a.attr_timeout)


def session_fd() -> int | None:
    """The mounted ``/dev/fuse`` descriptor of this process (pyfuse3 keeps it to itself);
    None unless there is exactly one."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.append(int(name))
        except OSError:  # closed while listing
            continue
    return found[0] if len(found) == 1 else None


def why_not(client: Client, opts: MountOptions) -> str | None:
    """Why native reads cannot run for this mount, or None when they can."""
    if not opts.rdma_native_reads:
        return "-rdma.nativeReads=false"
    if client.reader.fast is None:
        return "no fast path (-rdma.enabled with -rdma.sidecar)"
    if opts.rdma_verify:
        return "-rdma.verify reads every chunk whole, in Python"
    return None


class NativeLoop:
    """The loop of one mount and the handles it serves."""

    def __init__(self, reads: NativeReads, client: Client) -> None:
        self._reads = reads
        self._client = client
        self._by_inode: dict[int, set[int]] = {}
        self._loads = {"loads_on_loop": 0, "loads_off_loop": 0}
        # Offered inodes -> the path and view offered (the version their handles read).
        self._offers: dict[int, tuple[str, FileView]] = {}
        # Offered inodes by their directory: a rename looks under two paths, and must not
        # walk every offer (one per looked-up file) on the trio thread to do it.
        self._by_dir: dict[str, set[int]] = {}
        self._named: set[int] = set()  # offered with their name (LOOKUPs answered there)

    @classmethod
    def start(cls, client: Client, opts: MountOptions) -> NativeLoop | None:
        """Splices the loop into the session ``pyfuse3.init`` just mounted; None (logged)
        when it cannot run, and the mount then reads through pyfuse3 alone."""
        reason = why_not(client, opts)
        fast = client.reader.fast
        fd = session_fd() if reason is None else None
        if reason is None and fd is None:
            reason = "the FUSE session's descriptor was not found"
        if reason is not None or fast is None or fd is None:
            log.info("native reads off: %s", reason)
            return None
        try:
            reads = NativeReads(fast.engine, fd, threads=opts.rdma_native_threads,
                                op_bytes=fast.op_bytes, max_message=MAX_MESSAGE,
                                jwt_key=opts.jwt_key,
                                read_ahead=opts.rdma_read_ahead_mib << 20,
                                read_ahead_total=opts.rdma_read_ahead_total_mib << 20)
        except OSError as e:
            log.warning("native reads off: %s", e)
            return None
        log.info("native reads on: %d threads answer READs of open files from the fast path",
                 opts.rdma_native_threads)
        return cls(reads, client)

    def ended_fileno(self) -> int:
        """Readable once the kernel ended the session (an unmount from outside)."""
        return self._reads.ended_fileno()

    def load(self, fh: int, view: FileView) -> None:
        """Starts answering READs of ``fh`` from ``view``'s chunks. Blocking (it may ask
        the master where volumes are, and plans the chunks): run it off the trio thread,
        then ``track`` the handle there (or ``forget`` it if things changed meanwhile)."""
        self._load(fh, view, wait=True)

    def load_now(self, fh: int, view: FileView) -> bool:
        """``load`` when every volume's location is known already, so nothing blocks (it
        runs on the trio thread, sparing a small file's open a thread hop); False, with
        nothing done, when one would have to be asked for."""
        return self._load(fh, view, wait=False)

    def _load(self, fh: int, view: FileView, wait: bool) -> bool:
        fast = self._client.reader.fast
        if fast is None or view.inline is not None:
            return True  # inline bytes are in the entry: pyfuse3 answers those at once
        master = self._client.master
        if not wait and any(master.known(c.volume_id) is None for c in view.chunks):
            return False
        self._loads["loads_off_loop" if wait else "loads_on_loop"] += 1
        self._reads.register(fh, self._routes(view), view.entry.size)
        return True

    def offer(self, inode: int, path: str, view: FileView, keep_cache: bool,
              lookup: LookupEntry | None = None) -> bool:
        """Lets the loop answer read-only OPENs of ``inode`` (at ``path``) from ``view``;
        the first keeps the kernel's pages when ``keep_cache``; with ``lookup``, LOOKUPs of
        its name too. False, with nothing done, when its bytes are inline (pyfuse3 answers
        those) or a volume's location is not known yet (it would have to be asked for, on
        the trio thread). Runs on the trio thread; the caller has checked that nothing
        here writes the file."""
        if self._client.reader.fast is None or view.inline is not None:
            return False
        master = self._client.master
        if any(master.known(c.volume_id) is None for c in view.chunks):
            return False
        self._reads.offer(inode, self._routes(view), view.entry.size, keep_cache, lookup)
        self._unindex(inode)
        self._offers[inode] = (path, view)
        self._by_dir.setdefault(_directory(path), set()).add(inode)
        if lookup is not None:
            self._named.add(inode)
        else:
            self._named.discard(inode)
        return True

    def named(self, inode: int) -> bool:
        """Whether LOOKUPs of ``inode``'s name are answered by the loop."""
        return inode in self._named

    def take_lookups(self, inode: int) -> int:
        """The kernel references to ``inode`` that LOOKUPs the loop answered gave it since
        the last call (the inode table counts them from now on)."""
        return self._reads.take_lookups(inode)

    def _unindex(self, inode: int) -> None:
        got = self._offers.get(inode)
        if got is not None:
            d = _directory(got[0])
            inodes = self._by_dir.get(d)
            if inodes is not None:
                inodes.discard(inode)
                if not inodes:
                    del self._by_dir[d]

    def offered(self, inode: int) -> FileView | None:
        """The view ``inode`` is offered with, or None."""
        got = self._offers.get(inode)
        return got[1] if got is not None else None

    def withdraw(self, inode: int) -> list[tuple[int, str, FileView]]:
        """Stops the loop opening ``inode``; its handles the loop opened and are still open
        are this side's from now on: ``(fh, path, view)`` each, reading that view (their
        READs stay native until ``forget``)."""
        self._unindex(inode)
        self._named.discard(inode)
        got = self._offers.pop(inode, None)
        if got is None:
            return []
        return [(fh, *got) for fh in self._reads.withdraw(inode)]

    def offered_under(self, path: str) -> list[int]:
        """Offered inodes at ``path`` or under it (``path`` may be a directory)."""
        top = path.rstrip("/")
        prefix = top + "/"
        found = [i for i in self._by_dir.get(_directory(path), ()) if self._offers[i][0] == path]
        for d, inodes in self._by_dir.items():  # directories, not files: far fewer
            if d == top or d.startswith(prefix):
                found.extend(inodes)
        return found

    def offered_inodes(self) -> list[int]:
        """Every offered inode."""
        return list(self._offers)

    def adopt(self, fh: int) -> tuple[int, str, FileView] | None:
        """Takes over handle ``fh`` the loop opened: ``(inode, path, view)``, or None when
        it is not the loop's (released, or taken over already)."""
        if not fh & NATIVE_FH:
            return None
        inode = self._reads.adopt(fh)
        if inode is None:
            return None
        got = self._offers.get(inode)
        # An inode's handles are all taken over when its offer is withdrawn, so one the
        # loop still had belongs to an offered inode.
        assert got is not None, f"native handle {fh:#x} of inode {inode} not offered"
        return (inode, *got)

    def _routes(self, view: FileView) -> list[ChunkRoute]:
        fast = self._client.reader.fast
        assert fast is not None
        routes: list[ChunkRoute] = []
        for c in view.chunks:
            targets = fast.targets(c)
            sidecar = targets[0] if targets and not c.whole else ""
            vid, key, cookie = parse_fid(c.file_id)
            routes.append(ChunkRoute(c.offset, c.size, c.modified_ts_ns, c.whole, sidecar,
                                     vid, key, cookie))
        return routes

    def track(self, fh: int, inode: int) -> None:
        """Notes that ``fh`` (loaded) reads ``inode``, for ``forget_inode``."""
        self._by_inode.setdefault(inode, set()).add(fh)

    def forget(self, fh: int, inode: int) -> None:
        """Stops answering ``fh`` natively (released, or its registration is out of date)."""
        self._reads.unregister(fh)
        handles = self._by_inode.get(inode)
        if handles is not None:
            handles.discard(fh)
            if not handles:
                del self._by_inode[inode]

    def forget_inode(self, inode: int) -> None:
        """The file is being written here: its READs must see the written bytes, which
        only the Python operations know."""
        for fh in self._by_inode.pop(inode, set()):
            self._reads.unregister(fh)

    def stats(self) -> dict[str, int]:
        """The loop's counters (see ``NativeReads.stats``), and how many handles were
        loaded on the trio thread (``load_now``) and off it (``load``)."""
        return {**self._reads.stats(), **self._loads}

    def read_ahead_stats(self) -> dict[str, int]:
        """The loop's read-ahead counters and the bytes it holds now (see
        ``NativeReads.read_ahead_stats``)."""
        return self._reads.read_ahead_stats()

    def close(self) -> None:
        """Puts pyfuse3's descriptor back and stops the threads; after pyfuse3's loop
        returned, before ``pyfuse3.close()``."""
        self._reads.close()


def _directory(path: str) -> str:
    """The directory holding ``path`` ("/" for a name at the root)."""
    return path.rsplit("/", 1)[0] or "/"
