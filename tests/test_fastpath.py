"""The fast path over TCP with real sidecar processes next to a real cluster: every shape
byte-exact, with stats proving the bytes came over the fast path, and the failure cases."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma._core import Engine, Needle, OpFailure, RangeOp, WholeOp, format_fid, parse_fid

from .conftest import clients_per_filer, readers_running, shape_or_skip

pytestmark = pytest.mark.cluster

FAST_SHAPES = [
    "one_byte", "boundary_1048575", "boundary_1048576", "boundary_1048577", "multi_chunk",
    "compressed_text", "encrypted", "encrypted_text", "collection", "nested_unicode",
    "appended", "overlapping", "sparse",
]


@pytest.fixture(scope="module")
def fast_clients(shapes, sidecars):  # type: ignore[no-untyped-def]
    with clients_per_filer(shapes, sidecar=sidecars, transport="tcp") as made:
        yield made


@pytest.mark.parametrize("key", FAST_SHAPES)
def test_every_shape_over_the_fast_path(shapes, fast_clients, key):  # type: ignore[no-untyped-def]
    s = shape_or_skip(shapes, key)
    c = fast_clients[s.filer]
    before = c.stats()
    assert c.read(s.path) == s.data
    rng = random.Random(key)
    for _ in range(15):
        off = rng.randrange(0, len(s.data) + 5)
        size = rng.choice([1, 4096, 100_000, 2 << 20])
        assert c.read(s.path, off, size) == s.data[off:off + size], (off, size)
    after = c.stats()
    assert after["fast"]["bytes"] > before["fast"]["bytes"]
    assert after["http"]["bytes"] == before["http"]["bytes"], after["fallback_reasons"]
    assert after["fallbacks"] == before["fallbacks"], after["fallback_reasons"]


def test_stats_shape(fast_clients, cluster):  # type: ignore[no-untyped-def]
    st = fast_clients[cluster.filer.grpc_address].stats()
    assert st["transport"] == "tcp"  # transport="tcp" asked for
    assert st["fast"]["latency_us"]["p50"] > 0
    assert {h["addr"] for h in st["sidecars"]} <= set(cluster.sidecar_map().values())


def test_wrong_cookie_unknown_key_and_deleted(cluster, sidecars):  # type: ignore[no-untyped-def]
    payload = random.Random(11).randbytes(1300)  # incompressible: stored as it is
    cluster.upload("/fast/del.bin", payload)
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        chunk = c.entry("/fast/del.bin").chunks[0]
        vid, key, cookie = parse_fid(chunk.file_id)
        vs = c.master.lookup(vid)[0]
        addr = sidecars[vs]
    engine = Engine(transport="tcp")
    try:
        ok = engine.read_whole([WholeOp(addr, vid, key, cookie)])[0]
        assert isinstance(ok, Needle) and ok.data == payload and ok.verify()
        for wrong in (WholeOp(addr, vid, key, cookie ^ 0x10),
                      WholeOp(addr, vid, key + 99_999, cookie)):
            miss = engine.read_whole([wrong])[0]
            assert isinstance(miss, OpFailure) and miss.reason == "not_found", miss
        buf = bytearray(10)
        [miss] = engine.read_into(buf, [RangeOp(addr, vid, key, cookie ^ 1, 0, 10, 0)])
        assert miss is not None and miss.reason == "not_found"
        assert buf == bytearray(10), "no byte may arrive for a wrong cookie"
        r = httpx.delete(f"{vs}/{chunk.file_id}")
        assert r.status_code < 300
        got = engine.read_whole([WholeOp(addr, vid, key, cookie)])[0]
        assert isinstance(got, OpFailure) and got.reason == "deleted", got
    finally:
        engine.close()


def test_file_written_after_sidecar_start(cluster, sidecars):  # type: ignore[no-untyped-def]
    data = random.Random(3).randbytes(1_500_000)
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        cluster.upload("/fast/late.bin", data, max_mb=1)
        assert c.read("/fast/late.bin") == data
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] >= len(data)


def test_sidecar_http_endpoints(cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    with Client(cluster.filer.grpc_address) as c:
        chunk = c.entry(s.path).chunks[1]
        vid, key, cookie = parse_fid(chunk.file_id)
        vs_url = c.master.lookup(vid)[0]
    sc = next(x for x in cluster.sidecars
              if x.volume_server is not None and x.volume_server.url == vs_url)
    r = httpx.get(f"{sc.http_url}/read", params={"file_id": chunk.file_id, "offset": 10,
                                                  "size": 1000})
    assert r.status_code == 200 and r.headers["X-Source"].startswith("rdma-sidecar")
    assert r.content == s.data[chunk.offset + 10:chunk.offset + 1010]
    r = httpx.get(f"{sc.http_url}/read", params={"volume": vid, "needle": key, "cookie": cookie,
                                                  "offset": 0, "size": 16})
    assert r.content == s.data[chunk.offset:chunk.offset + 16]
    r = httpx.get(f"{sc.http_url}/read", params={"file_id": format_fid(vid, key, cookie ^ 1)})
    assert r.status_code == 404
    r = httpx.get(f"{sc.http_url}/read", params={"file_id": "garbage"})
    assert r.status_code == 400 and r.text
    assert httpx.get(f"{sc.http_url}/health").json()["status"] == "ok"
    assert "seaweed_rdma_sidecar_" in httpx.get(f"{sc.http_url}/metrics").text
    assert sc.stats()["transport"] in ("tcp", "verbs")


def test_sidecar_killed_during_concurrent_reads(cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp",
                fast_timeout=2.0) as c:
        with readers_running(c, {s.path: s.data}) as errors:
            deadline = time.monotonic() + 30
            while c.stats()["fast"]["bytes"] < 8 << 20:  # the readers are on the fast path
                assert time.monotonic() < deadline, c.stats()
                time.sleep(0.05)
            # ... and still reading over it right up to the kill.
            before = c.stats()["fast"]["bytes"]
            time.sleep(0.2)
            assert c.stats()["fast"]["bytes"] > before
            for sc in cluster.sidecars:
                sc.sigkill()
            time.sleep(2.0)
        assert not errors, errors[:5]
        st = c.stats()
        assert st["http"]["bytes"] > 0, "reads should have fallen back to HTTP"
        cut = st["engine"]["failures_by_reason"]
        # The readers met the dead sidecars (cut mid-read, refused, then marked down).
        assert sum(cut.get(k, 0) for k in ("lost", "timeout", "connect", "down")) > 0, cut
        for sc in cluster.sidecars:
            sc.start()
        # Back on the fast path by itself once the back-off has passed.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            before = c.stats()["fast"]["bytes"]
            assert c.read(s.path, 0, 1 << 20) == s.data[:1 << 20]
            if c.stats()["fast"]["bytes"] > before:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the fast path was not used again after the sidecars restarted")


def test_fallbacks_are_logged_with_reasons(cluster, shapes):  # type: ignore[no-untyped-def]
    """One Python log line per fallback says why, and the engine's own events (a sidecar
    marked down) reach Python's logging too."""
    import subprocess
    import sys

    from seaweed_rdma.cluster import free_port

    s = shapes["multi_chunk"]
    dead = f"127.0.0.1:{free_port()}"
    script = (
        "import logging, sys, hashlib\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, "
        "format='%(name)s %(levelname)s %(message)s')\n"
        "import seaweed_rdma\n"
        f"c = seaweed_rdma.Client({cluster.filer.grpc_address!r}, sidecar={dead!r}, "
        "transport='tcp')\n"
        f"print(hashlib.sha256(c.read({s.path!r})).hexdigest())\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    import hashlib

    assert r.stdout.strip() == hashlib.sha256(s.data).hexdigest()
    assert "seaweed_rdma.fastpath INFO fast path did not deliver" in r.stderr
    assert "reading over HTTP" in r.stderr
    assert "seaweed_rdma.engine" in r.stderr and "marked down" in r.stderr, r.stderr[-2000:]


def test_fallback_off_fails_instead_of_reading_http(cluster, shapes):  # type: ignore[no-untyped-def]
    """``fallback=False`` (the mount's ``-rdma.fallback=false``): what the fast path cannot
    deliver is an error naming the extent, not a silent HTTP read."""
    from seaweed_rdma.cluster import free_port
    from seaweed_rdma.errors import FastPathFailed

    s = shapes["multi_chunk"]
    dead = f"127.0.0.1:{free_port()}"
    with Client(cluster.filer.grpc_address, sidecar=dead, transport="tcp",
                fallback=False) as c:
        with pytest.raises(FastPathFailed, match="HTTP fallback is off"):
            c.read(s.path, 0, 4096)
        # Chunks read whole (compressed ones) too, and the error says why.
        z = shapes["compressed_text"]
        assert z.filer == s.filer
        with pytest.raises(FastPathFailed, match=r"\(whole\).*last reason: (connect|down)"):
            c.read(z.path)
        assert c.stats()["http"]["bytes"] == 0
        assert c.stats()["last_fallback"]["reason"] in ("connect", "down")


def test_read_fid_over_the_fast_path(cluster, sidecars):  # type: ignore[no-untyped-def]
    payload = random.Random(12).randbytes(300_000)
    text = b"".join(b"fid line %d\n" % i for i in range(30_000))
    cluster.upload("/fast/fid.bin", payload)
    cluster.upload("/fast/fid.txt", text, mime="text/plain")
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        plain = c.entry("/fast/fid.bin").chunks[0].file_id
        packed = c.entry("/fast/fid.txt").chunks[0]
        assert packed.is_compressed
        assert c.read_fid(plain) == payload
        assert c.read_fid(plain, 1000, 500) == payload[1000:1500]
        assert c.read_fid(packed.file_id) == text
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["reads"] >= 3, st


@pytest.mark.parametrize("busy_us", [0, 50])
def test_small_reads_with_and_without_busy_polling(cluster, sidecars, busy_us):  # type: ignore[no-untyped-def]
    """Busy polling only changes how the two ends wait: the same small reads, byte-exact,
    over the fast path (counted by the sidecars too), with it off on both ends and on, and
    with pauses between reads longer than the window so both ends also go to sleep."""
    payload = random.Random(13).randbytes(3 << 20)
    cluster.upload("/fast/busy.bin", payload, max_mb=1)
    made = [cluster.add_sidecar(vs, extra=[f"--busy-poll-us={busy_us}"])
            for vs in cluster.volume_servers]
    try:
        mapping = {sc.volume_server.url: sc.address for sc in made}
        served_before = sum(int(sc.stats()["bytes"]) for sc in made)  # type: ignore[call-overload]
        rng = random.Random(busy_us)
        with Client(cluster.filer.grpc_address, sidecar=mapping, transport="tcp",
                    fast_busy_poll_us=busy_us) as c:
            for i in range(300):
                off = rng.randrange(0, len(payload) - 4096)
                assert c.read("/fast/busy.bin", off, 4096) == payload[off:off + 4096], off
                if i % 50 == 0:
                    time.sleep(0.01)  # both ends' windows run out: the next read wakes them
            st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fallbacks"] == 0, st["fallback_reasons"]
        assert st["fast"]["bytes"] == 300 * 4096
        served = sum(int(sc.stats()["bytes"]) for sc in made)  # type: ignore[call-overload]
        assert served - served_before == 300 * 4096
    finally:
        for sc in made:
            sc.proc.terminate()
            sc.proc.wait(10)
            cluster.sidecars.remove(sc)


def test_event_loop_reads_drive_small_batches_themselves(cluster, sidecars):  # type: ignore[no-untyped-def]
    """Small reads on trio go out from the loop's thread and are read back there when the
    socket turns readable (polled batches), byte-exact, with several tasks at once and with
    reads cancelled mid-flight; larger ones are still submitted to the engine's threads."""
    import trio

    payload = random.Random(14).randbytes(3 << 20)
    cluster.upload("/fast/polled.bin", payload, max_mb=1)
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        view = c.view("/fast/polled.bin")
        c.read("/fast/polled.bin", 0, 16)  # the first connection is made off the loop

        async def off_loop(fn):  # type: ignore[no-untyped-def]
            return await trio.to_thread.run_sync(fn)

        async def reader(seed: int, cancel_some: bool) -> None:
            rng = random.Random(seed)
            for i in range(60):
                size = rng.choice([1, 512, 4096, 65536, 300_000])
                off = rng.randrange(0, len(payload) - size)
                buf = memoryview(bytearray(size))
                if cancel_some and i % 10 == 0:
                    with trio.move_on_after(0) as scope:  # cancelled at its first wait, if any
                        await c.reader.readinto_async(view, buf, off, off_loop)
                    cancelled.append(scope.cancelled_caught)
                    continue
                n = await c.reader.readinto_async(view, buf, off, off_loop)
                assert n == size and bytes(buf) == payload[off:off + size], (off, size)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for seed in range(4):
                    nursery.start_soon(reader, seed, seed % 2 == 1)

        cancelled: list[bool] = []
        trio.run(main)
        # A small polled read whose answer is already in completes without waiting, so
        # not every one is cancelled; the others were cut while their batch was out.
        assert any(cancelled), "no read was cancelled mid-flight"
        st = c.stats()
        assert st["http"]["bytes"] == 0, st["fallback_reasons"]
        assert st["engine"]["polled_batches"] > 50, st["engine"]
        assert st["engine"]["batches"] > st["engine"]["polled_batches"], "large ones submitted"
        # After the cancelled ones (their connections dropped), reads still come over the
        # fast path.
        assert c.read("/fast/polled.bin", 1000, 5000) == payload[1000:6000]
