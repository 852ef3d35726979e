"""Blocking calls off the trio thread: the one owner of the mount's thread limit
(``-concurrentReaders``) and of how a call waits through a filer outage.

Filer and engine calls block, so every one runs in a worker thread and the loop never
waits on the network. The gRPC calls wait through an unreachable filer themselves (for up
to ``-filerRetrySec``); ``riding`` gives the read side's HTTP calls the same patience.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from ..errors import Unreachable
from ..filer_grpc import FilerGrpc

T = TypeVar("T")


class FilerCalls:
    """Runs blocking calls in worker threads, at most ``limit`` at once."""

    def __init__(self, grpc: FilerGrpc, limit: int) -> None:
        self._grpc = grpc
        self._limiter = trio.CapacityLimiter(max(1, limit))

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args),
                                             limiter=self._limiter)

    async def riding(self, fn: Callable[..., T], *args: Any) -> T:
        """A filer call of the read side (HTTP), off the loop, waiting through a filer that
        is unreachable (restarting) for up to ``-filerRetrySec``, as the gRPC calls do."""
        pauses = self._grpc.retry.pauses()
        while True:
            try:
                out = await self.off_loop(fn, *args)
            except Unreachable as e:
                self._grpc.outage.down(str(e))
                pause = next(pauses, None)
                if pause is None:
                    raise
                await trio.sleep(pause)
                continue
            return out  # (maybe from a cache: only gRPC calls tell the outage is over)

    async def lookup_pb(self, path: str) -> Any:
        """The filer's entry at ``path`` (a protobuf), or ``FUSEError(ENOENT)``."""
        pb = await self.off_loop(self._grpc.lookup, path)
        if pb is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return pb
