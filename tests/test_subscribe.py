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
    # name -> (event ts_ns, stream breaks when it arrived)
    seen: dict[str, tuple[int, int]] = {}
    arrived = threading.Condition()
    url = f"{cluster.filer.url}/subscribed"
    marks: dict[str, int] = {}
    states: list[bool] = []

    def on_event(ev) -> None:  # type: ignore[no-untyped-def]
        n = ev.event_notification
        with arrived:
            seen.setdefault(n.new_entry.name or f"-{n.old_entry.name}",
                            (ev.ts_ns, stream.breaks))
            arrived.notify_all()

    def on_state(up: bool) -> None:
        states.append(up)
        if not up and "b_written" not in marks:
            # The follower is away, for certain: it calls this on its own thread before
            # it resubscribes, so b.txt is written before the new stream is asked for. It
            # must come with the resubscription, from the filer's log (replayed).
            marks["since"] = stream.last_ts
            httpx.post(f"{url}/b.txt", files={"f": b"b"}, timeout=30)
            marks["b_written"] = time.time_ns()

    def wait_for(name: str) -> None:
        with arrived:
            assert arrived.wait_for(lambda: name in seen, timeout=10), (name, seen)

    stream = MetaStream(cluster.filer.grpc_address, "/subscribed", on_event, on_state,
                        client_name="seaweed-rdma-test")
    stream.start()
    try:
        httpx.post(f"{url}/a.txt", files={"f": b"a"}, timeout=30)
        wait_for("a.txt")
        stream.interrupt()  # the stream breaks
        wait_for("b.txt")
        # And live events keep coming on the new stream.
        httpx.delete(f"{url}/a.txt", timeout=30)
        wait_for("-a.txt")
    finally:
        stream.stop()
    assert seen["a.txt"][1] == 0, seen  # on the first stream
    assert stream.breaks == 1 and False in states, (stream.breaks, states)
    # b.txt was written while the follower was away (before it resubscribed from the
    # last event it had seen), arrived on the second stream, and is newer than that point.
    b_ts, b_breaks = seen["b.txt"]
    assert b_breaks == 1 and b_ts > marks["since"] >= seen["a.txt"][0], (seen, marks)
    assert seen["-a.txt"][1] == 1, seen  # live, on the same new stream


def test_a_stream_counts_as_up_without_an_event(cluster):  # type: ignore[no-untyped-def]
    # A stream with no events yet is up (its state reported) while the call is open: no
    # event is needed to say so, and one that comes later is seen. One to a filer that
    # is not there is reported down (it may count as up for the moment before it fails).
    states: list[bool] = []
    got = threading.Event()
    stream = MetaStream(cluster.filer.grpc_address, "/upcheck", lambda ev: got.set(),
                        states.append)
    stream.start()
    try:
        t0 = time.monotonic()
        while not states:
            assert time.monotonic() - t0 < 10, "never reported up"
            time.sleep(0.01)
        assert states[0] is True
        httpx.post(f"{cluster.filer.url}/upcheck/x.txt", files={"f": b"x"}, timeout=30)
        assert got.wait(10), "the event after up never came"
    finally:
        stream.stop()
    states.clear()
    dead = MetaStream("127.0.0.1:1.1", "/upcheck", lambda ev: None, states.append)
    dead.start()  # (nothing listens on port 1)
    try:
        t0 = time.monotonic()
        while not (dead.breaks and False in states):
            assert time.monotonic() - t0 < 10, (dead.breaks, states)
            time.sleep(0.01)
    finally:
        dead.stop()


def test_a_signed_subscriber_gets_no_events_of_its_own_changes(cluster):  # type: ignore[no-untyped-def]
    """The mount subscribes with the signature its changes carry: the filer leaves those
    live events out (the mount would only drop them), and sends every other client's."""
    from seaweed_rdma.filer_grpc import PB, FilerGrpc

    names: list[str] = []
    arrived = threading.Condition()

    def on_event(ev) -> None:  # type: ignore[no-untyped-def]
        with arrived:
            names.append(ev.event_notification.new_entry.name)
            arrived.notify_all()

    ours = FilerGrpc(cluster.filer.grpc_address, signature=4242)
    other = FilerGrpc(cluster.filer.grpc_address, signature=777)
    ours.create("/", PB["Entry"](name="signed", is_directory=True))
    stream = MetaStream(cluster.filer.grpc_address, "/signed", on_event, lambda up: None,
                        signature=4242)
    stream.start()
    try:
        time.sleep(1.0)  # (the filer replays from the subscription's start anyway)
        for i, g in enumerate((ours, other, ours, other, ours)):
            e = PB["Entry"](name=f"{i}-{'ours' if g is ours else 'other'}")
            e.attributes.file_mode = 0o644
            g.create("/signed", e)
        with arrived:
            assert arrived.wait_for(lambda: "3-other" in names, timeout=30), names
        time.sleep(0.5)  # an own event, had it been sent, came before 3-other anyway
        # (Events the filer replays from its log, as of the directory made before the
        # subscription, are not filtered: the mount drops its own itself as well.)
        assert sorted(n for n in names if "-" in n) == ["1-other", "3-other"], names
    finally:
        stream.stop()
        ours.close()
        other.close()
