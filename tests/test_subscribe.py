"""The filer's metadata stream as the mount follows it: events arrive, and after a break
the subscriber resubscribes from the last event it saw and sees what happened meanwhile."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import trio

from seaweed_rdma.filer_grpc import FilerGrpc
from seaweed_rdma.mount.subscribe import MetaSubscriber

pytestmark = [pytest.mark.cluster]


class RecordingGrpc:
    """The filer's gRPC client as the subscriber sees it, keeping each subscription's
    ``since_ns`` and the wall clock when it was made."""

    def __init__(self, grpc: FilerGrpc) -> None:
        self.grpc = grpc
        self.target = grpc.target
        self.calls: list[tuple[int, int]] = []  # (since_ns, made at, ns)

    def subscribe(self, client_name: str, path_prefix: str, since_ns: int) -> Any:
        self.calls.append((since_ns, time.time_ns()))
        return self.grpc.subscribe(client_name, path_prefix, since_ns)


def test_events_then_resubscribe_after_a_break(cluster):  # type: ignore[no-untyped-def]
    grpc = FilerGrpc(cluster.filer.grpc_address)
    rec = RecordingGrpc(grpc)
    # name -> (event ts_ns, subscriptions made when it arrived)
    seen: dict[str, tuple[int, int]] = {}

    def on_event(ev) -> None:  # type: ignore[no-untyped-def]
        n = ev.event_notification
        seen.setdefault(n.new_entry.name or f"-{n.old_entry.name}", (ev.ts_ns, len(rec.calls)))

    sub = MetaSubscriber(rec, "/subscribed", time.time_ns(), on_event)  # type: ignore[arg-type]
    url = f"{cluster.filer.url}/subscribed"
    marks: dict[str, int] = {}

    async def wait_for(name: str) -> None:
        with trio.fail_after(10):
            while name not in seen:
                await trio.sleep(0.02)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.run)
            await trio.to_thread.run_sync(
                lambda: httpx.post(f"{url}/a.txt", files={"f": b"a"}, timeout=30))
            await wait_for("a.txt")
            marks["before"] = sub.last_ts
            sub.call.cancel()  # the stream breaks
            # Written while the subscriber is away, for certain: this blocks the trio
            # thread, so the subscriber cannot resubscribe until the write is done. It must
            # come with the resubscription, from the filer's log.
            httpx.post(f"{url}/b.txt", files={"f": b"b"}, timeout=30)
            marks["b_written"] = time.time_ns()
            await wait_for("b.txt")
            assert sub.breaks >= 1 and sub.last_ts > marks["before"]
            # And live events keep coming on the new stream.
            await trio.to_thread.run_sync(
                lambda: httpx.delete(f"{url}/a.txt", timeout=30))
            await wait_for("-a.txt")
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        grpc.close()
    assert len(rec.calls) == 2, rec.calls  # one break, one resubscription
    (first_since, _), (again_since, again_at) = rec.calls
    assert seen["a.txt"][1] == 1, seen  # on the first stream
    # The resubscription starts at the last event seen (a.txt), and was made after b.txt
    # was written: b.txt came from the filer's log (replayed), not as a live event.
    assert again_since == marks["before"] >= seen["a.txt"][0] > first_since
    assert again_at > marks["b_written"]
    b_ts, b_stream = seen["b.txt"]
    assert b_stream == 2 and b_ts > again_since, (seen, rec.calls)
    assert seen["-a.txt"][1] == 2, seen  # live, on the same new stream
