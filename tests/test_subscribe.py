"""The filer's metadata stream as the Client and the mount follow it (``MetaStream``, one
consumer for both): events arrive, and after a break the follower resubscribes from the
last event it saw and sees what happened meanwhile."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from seaweed_rdma.metastream import MetaStream

pytestmark = [pytest.mark.cluster]


def test_events_then_resubscribe_after_a_break(cluster):  # type: ignore[no-untyped-def]
    seen: list[str] = []
    arrived = threading.Condition()

    def on_event(ev) -> None:  # type: ignore[no-untyped-def]
        n = ev.event_notification
        with arrived:
            seen.append(n.new_entry.name or f"-{n.old_entry.name}")
            arrived.notify_all()

    def wait_for(name: str) -> None:
        with arrived:
            assert arrived.wait_for(lambda: name in seen, timeout=10), (name, seen)

    states: list[bool] = []
    stream = MetaStream(cluster.filer.grpc_address, "/subscribed", on_event, states.append,
                        client_name="seaweed-rdma-test")
    url = f"{cluster.filer.url}/subscribed"
    stream.start()
    try:
        httpx.post(f"{url}/a.txt", files={"f": b"a"}, timeout=30)
        wait_for("a.txt")
        before = stream.last_ts
        stream.interrupt()  # the stream breaks
        deadline = time.monotonic() + 10
        while stream.breaks < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.breaks >= 1 and False in states
        # Written while the follower is away: it must come with the resubscription.
        httpx.post(f"{url}/b.txt", files={"f": b"b"}, timeout=30)
        wait_for("b.txt")
        assert stream.last_ts > before
        # And live events keep coming on the new stream.
        httpx.delete(f"{url}/a.txt", timeout=30)
        wait_for("-a.txt")
    finally:
        stream.stop()
    assert seen.count("a.txt") >= 1 and "b.txt" in seen
