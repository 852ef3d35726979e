"""Every file shape byte-exact over RDMA verbs, and the kill-the-sidecar test, where this
host has a usable RDMA device (soft-RoCE ``rxe`` or hardware). Skips, saying why, elsewhere.

Each test proves the bytes went over verbs on both ends: the client's engine counts them as
verbs (none over tcp, none over HTTP, no fallbacks), and the sidecars' own ``/stats`` agree
to the byte (``tests/verbs.py``, which also lists the environment they read).
``ci/guest.sh`` runs these in a soft-RoCE guest; ``test_verbs_faults.py`` has the faults.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from pathlib import Path

import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster, Sidecar

from .conftest import FUSE_OK, Shape, readers_running
from .mounts import Mount
from .verbs import (
    CONNECT_TIMEOUT,
    NEEDS_DEVICE,
    READ_TIMEOUT,
    START_TIMEOUT,
    mapping,
    sidecar_bytes,
    stored_on_volumes,
    verbs_client,
    verbs_only,
    verbs_sidecars,
)
from .workers import FILE_SIZE, assert_all_right, forked_rounds, make_files

pytestmark = [pytest.mark.rdma, pytest.mark.cluster, NEEDS_DEVICE]
__all__ = ["verbs_sidecars"]  # a fixture: imported for pytest to find


def test_every_shape_over_verbs(shapes: dict[str, Shape], verbs_sidecars: list[Sidecar]
                                ) -> None:
    """Whole reads, random ranges and ``readinto``, every shape, byte-exact, verbs only."""
    for s in shapes.values():
        with verbs_client(s.filer, verbs_sidecars) as c:
            ctx = (verbs_only(c, verbs_sidecars, s.note) if stored_on_volumes(s)
                   else contextlib.nullcontext())
            with ctx:
                assert c.read(s.path) == s.data, s.note
                rng = random.Random(s.note)
                for _ in range(8):
                    off = rng.randrange(0, len(s.data) + 1)
                    size = rng.choice((1, 4096, 100_000, 1 << 20))
                    assert c.read(s.path, off, size) == s.data[off:off + size], (s.note, off)
                for _ in range(4):
                    off = rng.randrange(0, len(s.data) + 1)
                    buf = bytearray(rng.choice((1, 65_536, 1_500_000)))
                    n = c.readinto(s.path, buf, off)
                    want = s.data[off:off + len(buf)]
                    assert n == len(want), (s.note, off, n)
                    assert buf[:n] == want, (s.note, off)


def test_many_reads_in_flight_over_verbs(shapes: dict[str, Shape],
                                         verbs_sidecars: list[Sidecar]) -> None:
    """Threads reading random ranges at once: more reads in flight than a slot pool has."""
    files = {s.path: s.data for s in shapes.values()
             if stored_on_volumes(s) and s.filer == shapes["multi_chunk"].filer}
    with verbs_client(shapes["multi_chunk"].filer, verbs_sidecars) as c, \
            verbs_only(c, verbs_sidecars, "threads"):
        with readers_running(c, files, threads=6) as errors:
            time.sleep(3.0)
        assert not errors, errors[:5]


def test_sidecar_killed_during_verbs_reads_then_verbs_comes_back(
        cluster: LocalCluster, shapes: dict[str, Shape], verbs_sidecars: list[Sidecar]
) -> None:
    """SIGKILL the sidecars mid-read: no wrong byte (HTTP takes over); restart them: the
    same client reads over verbs again."""
    s = shapes["multi_chunk"]
    with Client(s.filer, sidecar=mapping(verbs_sidecars), transport="verbs",
                fast_timeout=2.0, fast_connect_timeout=CONNECT_TIMEOUT) as c:
        with readers_running(c, {s.path: s.data}, threads=4) as errors:
            # Verbs carries bytes (on both ends) before the kill, not only after a restart.
            deadline = time.monotonic() + CONNECT_TIMEOUT + 60
            while c.stats()["engine"]["bytes_by_transport"].get("verbs", 0) == 0:
                assert time.monotonic() < deadline, c.stats()
                time.sleep(0.2)
            assert sidecar_bytes(verbs_sidecars)["verbs"] > 0
            for sc in verbs_sidecars:
                sc.sigkill()
            time.sleep(2.0)
        assert not errors, errors[:5]
        st = c.stats()
        assert st["fallbacks"] > 0 and st["http"]["bytes"] > 0, st
        met = set(st["fallback_reasons"]) | set(st["engine"]["failures_by_reason"])
        assert met & {"lost", "timeout", "verbs", "connect", "down"}, st
        for sc in verbs_sidecars:
            sc.start()
        # The engine probes a sidecar that was down again after its back-off: keep reading
        # until verbs carries a whole read again (or give up after a generous deadline).
        deadline = time.monotonic() + 120
        while True:
            verbs_before = c.stats()["engine"]["bytes_by_transport"].get("verbs", 0)
            http_before = c.stats()["http"]["bytes"]
            assert c.read(s.path) == s.data
            st = c.stats()
            if (st["engine"]["bytes_by_transport"].get("verbs", 0) - verbs_before
                    == len(s.data) and st["http"]["bytes"] == http_before):
                break
            assert time.monotonic() < deadline, ("verbs did not come back", st)
            time.sleep(1.0)


@pytest.mark.fuse
@pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")
def test_mount_cats_shapes_over_verbs(cluster: LocalCluster, shapes: dict[str, Shape],
                                      tmp_path: Path) -> None:
    """``seaweed-rdma mount -rdma.enabled -rdma.transport=verbs -rdma.fallback=false``:
    ``cat`` of several shapes is byte-exact, and the sidecar served them over verbs only."""
    sc = cluster.add_sidecar(cluster.volume_servers, extra=["--transport=verbs"],
                             start_timeout=START_TIMEOUT)
    try:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        m = Mount([f"-filer={cluster.filer.grpc_address}", "-rdma.enabled",
                   f"-rdma.sidecar={sc.address}", "-rdma.transport=verbs",
                   "-rdma.fallback=false", f"-rdma.connectTimeoutMs={CONNECT_TIMEOUT * 1000:.0f}",
                   f"-rdma.timeoutMs={READ_TIMEOUT * 1000:.0f}"],
                  mnt, tmp_path / "mount.log", timeout=300)
        try:
            before = sidecar_bytes([sc])
            names = ["multi_chunk", "boundary_1048577", "compressed_text", "appended",
                     "nested_unicode", "sparse", "overlapping"]
            for name in names:
                s = shapes.get(name)
                if s is None or s.filer != cluster.filer.grpc_address:
                    continue
                got = subprocess.run(["cat", str(mnt / s.path.lstrip("/"))],
                                     capture_output=True, timeout=300, check=False)
                assert got.returncode == 0, (name, got.stderr, m.log.read_text()[-2000:])
                assert got.stdout == s.data, name
            after = sidecar_bytes([sc])
            assert after["tcp"] == before["tcp"], ("sidecar counted tcp bytes", before, after)
            assert after["verbs"] > before["verbs"], (before, after)
        finally:
            assert m.stop() == 0, m.log.read_text()[-3000:]
    finally:
        sc.kill()
        cluster.sidecars.remove(sc)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_a_used_client_reads_right_in_forked_workers_over_verbs(
        cluster: LocalCluster, verbs_sidecars: list[Sidecar]) -> None:
    """DataLoader's way over verbs: a client used, then forked into 4 workers, 3 rounds.
    Each child registers its own memory and connects its own queue pairs (the parent's are
    not usable there), reads every file right, and counts its bytes as verbs; the sidecars
    count at least as many verbs bytes. (Fewer files than on the host: TCG is slow.)"""
    files = make_files(cluster, "/workers-verbs", 120)
    with verbs_client(cluster.filer.grpc_address, verbs_sidecars) as c:
        first = sorted(files)[0]
        assert len(c.read(first)) == FILE_SIZE
        before = sidecar_bytes(verbs_sidecars)["verbs"]
        rounds = forked_rounds(c, files, rounds=3)
        assert_all_right(rounds, lambda: sidecar_bytes(verbs_sidecars)["verbs"], before)
        for reports in rounds:
            for r in reports:
                assert r.by_transport.get("verbs", 0) >= r.files * FILE_SIZE, r
                assert r.by_transport.get("tcp", 0) == 0, r
