"""Files offered to the native loop before the kernel looks them up (``OffersAhead``).

A lookup offers its file to the native loop with its name, so the loop answers that
name's later LOOKUPs, OPENs and READs; but the kernel keeps a name it was given for the
entry timeout, so what costs the Python operations one request per file is the *first*
lookup of each name. A training set's reader goes through a directory's files once per
epoch, each file once: after the first lookup in a directory whose listing is held, the
directory's other files are offered too (``start``), and their lookups never reach
Python.

Each offered name needs an inode number before the kernel asks for it. Numbers the kernel
never saw are given back when their directory leaves the budget of names offered ahead
(the least recently offered directory goes first), so the inode table stays bounded by
that budget plus what the kernel holds.
"""

from __future__ import annotations

import logging
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..client import Client
    from ..filer import Entry
    from .handle_table import HandleTable
    from .inodes import InodeTable
    from .native import NativeLoop

log = logging.getLogger("seaweed_rdma.mount")

BUDGET = 65_536  # names offered ahead, all directories together
AGAIN_S = 2.0  # a directory is offered ahead at most this often
# The loop is yielded to after this long offering (other requests wait meanwhile), not
# after a count: readers go through a directory in order too, and each yield lets every
# waiting lookup through Python, so short batches let readers keep pace with the offers.
SLICE_S = 0.005


class OffersAhead:
    """Directories whose files were offered ahead, and the inodes numbered for them."""

    def __init__(self, client: Client, inodes: InodeTable, handles: HandleTable,
                 offer: Callable[[str, int], bool], forget: Callable[[int, int], bool],
                 budget: int = BUDGET) -> None:
        self._client = client
        self._inodes = inodes
        self._handles = handles
        self._offer = offer
        self._forget = forget  # (the driver's: counts the loop's references first)
        self._budget = budget
        self._native: NativeLoop | None = None
        # directory -> (when last offered, inodes numbered for it), least recent first
        self._dirs: OrderedDict[str, tuple[float, list[int]]] = OrderedDict()
        self._running: set[str] = set()
        self._count = 0
        self.counts = {"ahead_dirs": 0, "ahead_offered": 0, "ahead_dropped": 0,
                       "ahead_us": 0}

    def attach_native(self, native: NativeLoop | None) -> None:
        """The native loop, once the session is mounted."""
        self._native = native

    def start(self, directory: str, nursery: trio.Nursery | None) -> None:
        """Offers ``directory``'s files in the background if its listing is held and it
        was not offered in the last ``AGAIN_S`` seconds. Runs on the trio thread."""
        if nursery is None or self._native is None or not self._handles.offers_native \
                or directory in self._running:
            return
        last = self._dirs.get(directory)
        now = trio.current_time()
        if last is not None and now - last[0] < AGAIN_S:
            return
        listing = self._client.held_listing(directory)
        if not listing or len(listing) > self._budget:
            return
        self._running.add(directory)
        nursery.start_soon(self._offer_all, directory, listing, now)

    async def _offer_all(self, directory: str, listing: list[Entry], now: float) -> None:
        try:
            numbered = list(self._dirs.pop(directory, (now, []))[1])
            self._count -= len(numbered)
            started = time.perf_counter()
            for e in listing:
                if time.perf_counter() - started > SLICE_S:
                    await trio.sleep(0)  # requests waiting on the loop go first
                    started = time.perf_counter()
                if not stat.S_ISREG(e.mode) or e.hard_link_id or e.nlink > 1 \
                        or e.content is not None:
                    continue  # (inline bytes are answered by pyfuse3 at once)
                known = self._inodes.find(e.path)
                inode = known if known is not None else self._inodes.inode(e.path)
                if self._offer(e.path, inode):
                    if known is None:
                        numbered.append(inode)
                    self.counts["ahead_offered"] += 1
                elif known is None:
                    self._inodes.forget(inode, 0)  # not offered: the number goes back
            self.counts["ahead_us"] += int((trio.current_time() - now) * 1e6)
            self._dirs[directory] = (now, numbered)
            self._count += len(numbered)
            self.counts["ahead_dirs"] += 1
            self._keep_within_budget(directory)
        finally:
            self._running.discard(directory)

    def _keep_within_budget(self, keep: str) -> None:
        while self._count > self._budget and len(self._dirs) > 1:
            directory, (_, numbered) = next(iter(self._dirs.items()))
            if directory == keep:
                self._dirs.move_to_end(directory)
                continue
            del self._dirs[directory]
            self._count -= len(numbered)
            for inode in numbered:
                self.give_back(inode)

    def give_back(self, inode: int) -> None:
        """Drops ``inode`` (numbered for an offer ahead) unless the kernel learnt it: its
        offer is withdrawn first, so no LOOKUP hands it out afterwards."""
        if self._native is None or self._inodes.referenced(inode):
            return
        if self._forget(inode, 0):  # (kept if the loop's LOOKUPs gave it to the kernel)
            self.counts["ahead_dropped"] += 1
