"""The filer's metadata stream as the mount follows it: events arrive, and after a break
the subscriber resubscribes from the last event it saw and sees what happened meanwhile."""

from __future__ import annotations

import time

import httpx
import pytest
import trio

from seaweed_rdma.filer_grpc import FilerGrpc
from seaweed_rdma.mount.subscribe import MetaSubscriber

pytestmark = [pytest.mark.cluster]


def test_events_then_resubscribe_after_a_break(cluster):  # type: ignore[no-untyped-def]
    grpc = FilerGrpc(cluster.filer.grpc_address)
    seen: list[str] = []

    def on_event(ev) -> None:  # type: ignore[no-untyped-def]
        n = ev.event_notification
        seen.append(n.new_entry.name or f"-{n.old_entry.name}")

    sub = MetaSubscriber(grpc, "/subscribed", time.time_ns(), on_event)
    url = f"{cluster.filer.url}/subscribed"

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
            before = sub.last_ts
            sub.call.cancel()  # the stream breaks
            # Written while the subscriber is away: it must come with the resubscription.
            await trio.to_thread.run_sync(
                lambda: httpx.post(f"{url}/b.txt", files={"f": b"b"}, timeout=30))
            await wait_for("b.txt")
            assert sub.breaks >= 1 and sub.last_ts > before
            # And live events keep coming on the new stream.
            await trio.to_thread.run_sync(
                lambda: httpx.delete(f"{url}/a.txt", timeout=30))
            await wait_for("-a.txt")
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        grpc.close()
    assert seen.count("a.txt") >= 1 and "b.txt" in seen
