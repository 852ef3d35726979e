"""The filer's ``SubscribeMetadata`` stream, followed on a thread of its own: the one
consumer of it, for a Client's held metadata and for the mount (``mount.events``).

The stream starts a little before the first entry is held (so no change made after a
fetch can be missed: the filer replays its log from ``since_ns``), and every event goes to
one callback. When the stream breaks, the follower says so (held entries then fall back to
their TTL), pauses, and resubscribes from the last event it saw.

Forks: gRPC must not be inside a call when a process forks (its threads would be gone in
the child, holding its locks). So a fork stops the stream first (``pause_for_fork``, from
an ``os.register_at_fork`` hook) and starts it again in the parent afterwards. A forked
child of a process that used gRPC does not use it at all (``usable_here``): gRPC's own
state is not guaranteed to survive a fork, and a hang in a DataLoader worker is worse than
metadata that expires by TTL there. A spawned worker has its own stream.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("seaweed_rdma.metastream")

# Events stamped up to this long before our clock's "now" are asked for again: the filer's
# clock and ours may differ a little, and an event seen twice is harmless.
CLOCK_SLACK_NS = 2_000_000_000
# How long a new stream must stay open before it counts as up (held entries trusted, the
# mount's files offered to its native loop): long enough for a refused connection to fail
# first. It need not be longer: the filer replays its log from `since_ns` whenever it
# takes the subscription, so no event is missed, and a call that fails later marks the
# stream down as any break does. (It was 0.3 s: a fresh mount's first lookups then found
# the stream not up and offered nothing.) Not grpc's connectivity API: its polling thread
# outlives the wait, and a fork() meanwhile crashed the child (test_data's fork workers).
UP_AFTER_S = 0.05


# The process that first followed a stream; a forked child sees its parent's id here.
_grpc_pid: int | None = None


def usable_here() -> bool:
    """Whether this process may follow a stream: not a fork of a process that used gRPC."""
    return _grpc_pid is None or _grpc_pid == os.getpid()


class MetaStream:
    """Follows metadata events under ``prefix`` on filer ``filer`` (``host:port[.grpc]``)
    and calls ``on_event`` (on the follower thread) for each; ``on_state(up)`` when the
    stream comes up or breaks. ``client_name`` names the subscriber to the filer; the
    filer leaves out the events of changes whose requests carried ``signature``."""

    def __init__(self, filer: str, prefix: str, on_event: Callable[[Any], None],
                 on_state: Callable[[bool], None], client_name: str = "",
                 signature: int = 0) -> None:
        self._filer = filer
        self._signature = signature
        self._prefix = prefix
        self._name = client_name
        self._on_event = on_event
        self._on_state = on_state
        self.last_ts = time.time_ns() - CLOCK_SLACK_NS
        self.events = 0
        self.breaks = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._call: Any = None
        self._thread: threading.Thread | None = None
        self._grpc: Any = None

    def start(self) -> None:
        """Starts following (idempotent)."""
        global _grpc_pid
        if not usable_here():
            return
        _grpc_pid = os.getpid()
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="seaweed-rdma-metastream")
            self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Ends the stream and waits up to ``wait`` seconds for its thread."""
        with self._lock:
            self._stopping = True
            call, thread = self._call, self._thread
            self._thread = None
        if call is not None:
            call.cancel()
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)
        if self._grpc is not None:
            self._grpc.close()
            self._grpc = None

    def pause_for_fork(self) -> bool:
        """Ends the stream (its thread leaves gRPC) before a fork; whether it ran."""
        with self._lock:
            call, thread = self._call, self._thread
            if thread is None or self._stopping:
                return False
            self._stopping = True
            self._thread = None
        if call is not None:
            call.cancel()
        thread.join(2.0)
        with self._lock:
            self._stopping = False
        return True

    def interrupt(self) -> None:
        """Breaks the current stream as a fault would: the follower resubscribes from the
        last event it saw."""
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _mark_up(self, call: Any) -> None:
        if self._call is call and call.is_active():
            self._on_state(True)

    def stats(self) -> dict[str, Any]:
        """Events seen and stream breaks."""
        return {"events": self.events, "breaks": self.breaks, "last_ts_ns": self.last_ts}

    def _run(self) -> None:
        from .filer_grpc import FilerGrpc, iter_events

        pause = 0.2
        name = self._name or f"seaweed-rdma-client-{os.getpid()}"
        while True:
            with self._lock:
                if self._stopping:
                    return
                if self._grpc is None:
                    self._grpc = FilerGrpc(self._filer)
                call = self._call = self._grpc.subscribe(name, self._prefix, self.last_ts,
                                                             signature=self._signature)
            seen = self.events
            reason = "the filer ended the stream"
            # The filer sends nothing (not even headers) until an event: a stream still
            # open after UP_AFTER_S counts as up. Events from before then are not lost:
            # the filer replays its log from `since_ns`.
            timer = threading.Timer(UP_AFTER_S, self._mark_up, args=(call,))
            timer.daemon = True
            timer.start()
            try:
                for reply in call:
                    self._on_state(True)
                    for ev in iter_events(reply):
                        self.events += 1
                        self.last_ts = max(self.last_ts, ev.ts_ns)
                        try:
                            self._on_event(ev)
                        except Exception:  # one bad event must not end the stream
                            log.exception("metadata event under %s", ev.directory)
            except Exception as e:
                code = getattr(e, "code", None)
                reason = (f"{code().name}: {e.details()}" if callable(code)  # type: ignore[attr-defined]
                          else repr(e))
            finally:
                timer.cancel()
                self._on_state(False)
            with self._lock:
                self._call = None
                if self._stopping:
                    return
            self.breaks += 1
            if self.events > seen:
                pause = 0.2
            log.warning("metadata stream from %s broke (%s); held entries expire by TTL "
                        "until it resumes from %d in %.1fs", self._filer, reason[:200],
                        self.last_ts, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
