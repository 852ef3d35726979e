"""Replica fail-over over HTTP: a dead or corrupt replica is skipped for the next one, and
a volume with no live replica gives a clear error. Uses its own cluster (it kills servers)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster
from seaweed_rdma.errors import NoLiveLocation, SeaweedRdmaError

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def replicated():  # type: ignore[no-untyped-def]
    with LocalCluster(volumes=2, filer_args=["-defaultReplicaPlacement=001"]) as c:
        yield c


def _dat_files(server_dir: Path) -> list[Path]:
    return sorted(server_dir.glob("*.dat"))


def _corrupt_on(server_dir: Path, needle: bytes) -> bool:
    """Flips one byte of ``needle`` wherever a .dat on that server holds it."""
    for dat in _dat_files(server_dir):
        blob = dat.read_bytes()
        at = blob.find(needle)
        if at >= 0:
            with open(dat, "r+b") as f:
                f.seek(at + len(needle) // 2)
                f.write(bytes([blob[at + len(needle) // 2] ^ 0xFF]))
            return True
    return False


def test_corrupt_replica_is_skipped(replicated):  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    data = rng.randbytes(300_000)
    text = b"".join(b"row %d of a compressible file\n" % i for i in range(40_000))
    replicated.upload("/r/plain.bin", data)
    replicated.upload("/r/text.txt", text, mime="text/plain")
    with Client(replicated.filer.grpc_address) as c:
        assert c.read("/r/plain.bin") == data
        assert c.read("/r/text.txt") == text
        chunk = c.entry("/r/text.txt").chunks[0]
        locations = c.master.lookup(chunk.volume_id)
        assert len(locations) == 2, "replication 001 should give two replicas"
        stored, _ = c.reader.http.read_whole(chunk.file_id)
        first = next(s for s in replicated.volume_servers if s.url == locations[0])
        assert _corrupt_on(first.dir, stored), "needle bytes not found in the first replica"
        c.reader.forget_decoded()
        before = c.stats()
        assert c.read("/r/text.txt") == text
        st = c.stats()
        # The corrupt replica was asked first and failed; the other one answered. Its own
        # volume server catches the flipped byte by CRC and answers 500 (so the client's
        # CRC check has nothing left to catch here), while the other replica serves it.
        assert st["http_replica_retries"] - before.get("http_replica_retries", 0) == 1, st
        assert st.get("http_crc_mismatches", 0) == before.get("http_crc_mismatches", 0), st
        assert httpx.get(f"{locations[0]}/{chunk.file_id}", timeout=30).status_code == 500
        assert httpx.get(f"{locations[1]}/{chunk.file_id}", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def replica_sidecars(replicated):  # type: ignore[no-untyped-def]
    for vs in replicated.volume_servers:
        replicated.add_sidecar(vs)
    return replicated.sidecar_map()


def test_down_sidecar_is_replaced_by_the_other_replicas(replicated, replica_sidecars):  # type: ignore[no-untyped-def]
    data = random.Random(7).randbytes(2_500_000)
    replicated.upload("/r/fast.bin", data, max_mb=1)
    with Client(replicated.filer.grpc_address, sidecar=replica_sidecars, transport="tcp",
                fast_timeout=2.0) as c:
        chunks = c.entry("/r/fast.bin").chunks
        assert all(len(c.master.lookup(ch.volume_id)) == 2 for ch in chunks)
        # One sidecar down: with two volume servers, every volume has a replica on the other.
        first = replica_sidecars[c.master.lookup(chunks[0].volume_id)[0]]
        victims = [s for s in replicated.sidecars if s.address == first]
        for s in victims:
            s.sigkill()
        try:
            for off in (0, 1_000_000, 2_000_000):
                assert c.read("/r/fast.bin", off, 400_000) == data[off:off + 400_000]
            assert c.read("/r/fast.bin") == data
            st = c.stats()
        finally:
            for s in victims:
                s.start()
    assert st["http"]["bytes"] == 0, st["fallback_reasons"]
    assert st["fallbacks"] == 0, st["fallback_reasons"]
    assert st["replica_retries"] > 0
    assert st["fast"]["bytes"] >= len(data)


def test_corrupt_replica_is_caught_on_the_fast_path(replicated, replica_sidecars):  # type: ignore[no-untyped-def]
    """A flipped byte in one replica's .dat: whole reads (compressed chunks) catch it by
    CRC and take the other replica's sidecar; with verify=True, so do ranged reads, which
    without it would believe the sidecar."""
    rng = random.Random(8)
    data = rng.randbytes(200_000)
    text = b"".join(b"line %d of the corrupt-replica test\n" % i for i in range(20_000))
    replicated.upload("/r/cplain.bin", data)
    replicated.upload("/r/ctext.txt", text, mime="text/plain")
    with Client(replicated.filer.grpc_address) as c:
        plain, compressed = c.entry("/r/cplain.bin").chunks[0], c.entry("/r/ctext.txt").chunks[0]
        for chunk in (plain, compressed):
            stored, _ = c.reader.http.read_whole(chunk.file_id)
            first = next(s for s in replicated.volume_servers
                         if s.url == c.master.lookup(chunk.volume_id)[0])
            assert _corrupt_on(first.dir, stored), "needle bytes not found in the replica"
    with Client(replicated.filer.grpc_address, sidecar=replica_sidecars,
                transport="tcp") as c:
        assert c.read("/r/ctext.txt") == text
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] > 0, st
        # The corrupt replica's sidecar answered first; its CRC failed; the other's served.
        assert st.get("crc_mismatches", 0) == 1 and st["replica_retries"] >= 1, st
        # Ranged reads trust the sidecar: the flipped byte comes through.
        assert c.read("/r/cplain.bin") != data
    with Client(replicated.filer.grpc_address, sidecar=replica_sidecars, transport="tcp",
                verify=True) as c:
        assert c.read("/r/cplain.bin") == data
        assert c.read("/r/cplain.bin", 5000, 777) == data[5000:5777]
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] >= len(data), st
        # Each read met the flipped byte first, by CRC, and took the other replica.
        assert st.get("crc_mismatches", 0) >= 1 and st["replica_retries"] >= 1, st


def test_dead_replica_then_no_live_location(replicated):  # type: ignore[no-untyped-def]
    data = random.Random(6).randbytes(200_000)
    replicated.upload("/r/dead.bin", data)
    with Client(replicated.filer.grpc_address) as c:
        assert c.read("/r/dead.bin") == data
        vid = c.entry("/r/dead.bin").chunks[0].volume_id
        locations = c.master.lookup(vid)
        victim = next(s for s in replicated.volume_servers if s.url == locations[0])
        victim.kill()
        assert c.read("/r/dead.bin") == data  # the other replica answers
        for s in replicated.volume_servers:
            s.kill()
        c.invalidate()
        with pytest.raises(SeaweedRdmaError) as e:
            c.read("/r/dead.bin", 0, 100)
        assert isinstance(e.value, NoLiveLocation)
        assert str(vid) in str(e.value)
