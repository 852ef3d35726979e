"""Metadata pushed by the filer: a ``SubscribeMetadata`` stream for the life of the mount.

The stream starts at the mount's start time under ``-filer.path`` and is read in a worker
thread; each event is handed to the trio thread, where the mount drops what it cached
and tells the kernel. When the stream breaks, the subscriber resubscribes from the last
event it saw (after a short, growing pause); meanwhile cached metadata still expires
after ``-cacheMetaTtlSec``, as without the stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import trio

from ..filer_grpc import FilerGrpc, iter_events

log = logging.getLogger("seaweed_rdma.mount")


class MetaSubscriber:
    """Follows the filer's metadata events under ``prefix`` from ``since_ns`` and calls
    ``on_event`` (on the trio thread) for each."""

    def __init__(self, grpc: FilerGrpc, prefix: str, since_ns: int,
                 on_event: Callable[[Any], None],
                 on_break: Callable[[], None] | None = None) -> None:
        self.grpc = grpc
        self.prefix = prefix
        self.last_ts = since_ns
        self.on_event = on_event
        self.on_break = on_break  # told when the stream breaks (what it kept may be stale)
        self.events = 0
        self.breaks = 0
        self.connected = False
        self.call: Any = None  # the current stream (cancel() breaks it, as a fault would)

    def stats(self) -> dict[str, Any]:
        """Events seen, stream breaks, and whether the stream is up."""
        return {"meta_events": self.events, "meta_stream_breaks": self.breaks,
                "meta_stream_up": self.connected, "meta_last_ts_ns": self.last_ts}

    def _deliver(self, ev: Any) -> None:
        self.events += 1
        self.last_ts = max(self.last_ts, ev.ts_ns)
        try:
            self.on_event(ev)
        except Exception:  # one bad event must not end the subscription
            log.exception("metadata event for %s", ev.directory)

    def _pump(self, call: Any, token: trio.lowlevel.TrioToken) -> None:
        for reply in call:
            self.connected = True
            for ev in iter_events(reply):
                trio.from_thread.run_sync(self._deliver, ev, trio_token=token)

    async def run(self) -> None:
        """Subscribes, and resubscribes from the last event whenever the stream breaks."""
        token = trio.lowlevel.current_trio_token()
        pause = 0.2
        name = f"seaweed-rdma-mount-{os.getpid()}"
        while True:
            seen = self.events
            call = self.call = self.grpc.subscribe(name, self.prefix, self.last_ts)
            try:
                await trio.to_thread.run_sync(self._pump, call, token, abandon_on_cancel=True)
                reason = "the filer ended the stream"
            except Exception as e:
                reason = _reason(e)
            finally:
                call.cancel()
                self.connected = False
            self.breaks += 1
            if self.on_break is not None:
                self.on_break()
            if self.events > seen:
                pause = 0.2
            log.warning("metadata stream from %s broke (%s); resubscribing from %d in %.1fs "
                        "(cached metadata expires by TTL meanwhile)", self.grpc.target,
                        reason[:200], self.last_ts, pause)
            await trio.sleep(pause)
            pause = min(pause * 2, 5.0)


def _reason(e: Exception) -> str:
    """One line for a broken stream (a gRPC error's repr spans several)."""
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{code().name}: {details()}"
        except Exception:  # not a finished call after all
            pass
    return " ".join(repr(e).split())
