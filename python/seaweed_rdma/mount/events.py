"""Other clients' changes, as the filer's metadata events announce them, applied to the
mount (``MetaEvents``): it owns no state of the mount, and tells each owner what changed.

The events come from ``metastream.MetaStream`` (the one consumer of the filer's
``SubscribeMetadata`` stream, shared with the Client), which follows the stream under
``-filer.path`` on a thread of its own and resubscribes from the last event after a
break; each event is handed to the trio thread, where it is applied. While the stream is
down, cached metadata still expires after ``-cacheMetaTtlSec``, and the names the tree
knew of listed directories are forgotten (changes may have been missed).

For each event that is not our own (our requests carry the mount's signature): the tree
follows a rename and drops the names and the cached metadata of the paths involved; a
writer of a changed file takes the new version as its base (or, for a removed file,
writes nowhere from now on); read handles of a changed file move to its new version;
and the kernel is told to drop the name and the inode's attributes and pages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from ..filer_grpc import join_path, split_path
from ..metastream import MetaStream

if TYPE_CHECKING:
    from ..client import Client
    from .handle_table import HandleTable
    from .inodes import InodeTable
    from .tree import Tree


class MetaEvents:
    """Follows the filer's metadata events under ``prefix`` (``follow``) and applies each
    (``apply``, on the trio thread)."""

    def __init__(self, filer: str, prefix: str, signature: int, client: Client,
                 inodes: InodeTable, tree: Tree, handles: HandleTable) -> None:
        self._signature = signature
        self._client = client
        self._inodes = inodes
        self._tree = tree
        self._handles = handles
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._up = False
        # The filer sends no events of our own changes (their requests carry
        # ``signature``): they would only be decoded here to be dropped.
        self._stream = MetaStream(filer, prefix, self._from_stream, self._stream_state,
                                  client_name=f"seaweed-rdma-mount-{os.getpid()}",
                                  signature=signature)

    async def follow(self, nursery: trio.Nursery) -> None:
        """Follows the stream for the life of the mount; ``nursery`` runs the work that
        follows an event. Stops the stream when cancelled."""
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._stream.start()
        try:
            await trio.sleep_forever()
        finally:
            self._stream.stop(wait=0)  # its thread may be waiting for this one

    def stats(self) -> dict[str, Any]:
        """Events seen, stream breaks, and whether the stream is up."""
        s = self._stream
        return {"meta_events": s.events, "meta_stream_breaks": s.breaks,
                "meta_stream_up": self._up, "meta_last_ts_ns": s.last_ts}

    def interrupt(self) -> None:
        """Breaks the stream as a fault would (it resubscribes from the last event)."""
        self._stream.interrupt()

    def _to_trio(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs ``fn(*args)`` on the trio thread and waits for it (from the follower)."""
        if self._token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):  # the mount is ending
            trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def _from_stream(self, ev: Any) -> None:
        # Our own changes (if a filer sends them) are skipped here, on the follower: each
        # hop to the trio thread wakes the loop.
        if self.ours(ev):
            return
        self._to_trio(self.apply, ev)

    def ours(self, ev: Any) -> bool:
        """Whether ``ev`` announces a change this mount made (applied already)."""
        return self._signature in ev.event_notification.signatures

    def _stream_state(self, up: bool) -> None:
        self._up = up
        # While the stream is up, what the Client holds stays until an event drops it
        # (every event is applied below); while it is down, it expires by TTL.
        self._client.stream_state(up)
        self._to_trio(self._handles.stream_state, up)
        if not up:  # changes may be missed until it resumes
            self._to_trio(self._tree.forget_listed)

    def apply(self, ev: Any) -> None:
        """One ``SubscribeMetadataResponse``."""
        if self.ours(ev):
            return
        n = ev.event_notification
        old = join_path(ev.directory, n.old_entry.name) if n.old_entry.name else None
        new = (join_path(n.new_parent_path or ev.directory, n.new_entry.name)
               if n.new_entry.name else None)
        for path in (old, new):  # a directory moved or went: every path under it
            if path is not None and (n.old_entry.is_directory or n.new_entry.is_directory):
                self._client.invalidate(path)
                if old != new:  # (an update of its own attributes changes nothing under it)
                    self._handles.withdraw_native_under(path)
        for path in (old, new):  # before the names move: a replaced target is unbound
            if path is not None:
                self._handles.withdraw_native(self._inodes.find(path))
        if old is not None and new is not None and old != new:
            self._tree.follow_rename(old, new)  # open files (and inodes) move with it
        for path in [p for p in (old, new) if p is not None]:
            self._tree.changed_elsewhere(path)
            self._tree.forget_path(path)
            inode = self._inodes.find(path)
            w = self._handles.writer(inode)
            if w is not None:
                if path == new:
                    w.remote_version(n.new_entry)  # its version is the base from now on
                elif new is None:
                    w.unlink()  # removed elsewhere: no commit brings it back
            self._kernel_forget(path, inode)
            if inode is not None and w is None and self._nursery is not None:
                self._nursery.start_soon(self._handles.refresh, inode, path)

    def _kernel_forget(self, path: str, inode: int | None) -> None:
        """Tells the kernel that ``path`` changed: its name, and the inode's attributes and
        pages. Runs in a worker thread, never from within a handler, since the kernel may
        wait for a request that is being handled."""
        directory, name = split_path(path)
        parent = self._inodes.find(directory)

        def work() -> None:
            # OSError: the kernel did not know the name or inode, so nothing to drop.
            if parent is not None:
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_entry(parent, os.fsencode(name))
            if inode is not None:
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_inode(inode, False)

        if self._nursery is not None:
            self._nursery.start_soon(trio.to_thread.run_sync, work)
