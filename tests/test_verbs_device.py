"""Every file shape byte-exact over RDMA verbs, and the kill-the-sidecar test, where this
host has a usable RDMA device (soft-RoCE ``rxe`` or hardware). Skips, saying why, elsewhere.

Each test proves the bytes went over verbs on both ends: the client's engine counts them as
verbs (none over tcp, none over HTTP, no fallbacks), and the sidecars' own ``/stats`` agree
to the byte. ``ci/guest.sh`` runs these in a soft-RoCE guest.

Environment (all optional):
- ``SEAWEED_RDMA_DEVICE``: the client's RDMA device (read by the engine).
- ``SEAWEED_RDMA_SIDECAR_DEVICE``: the sidecars' device (``--rdma-device``, added by
  ``LocalCluster.add_sidecar``). When it differs
  from the client's, the tests also check each device's packet counters, so the bytes must
  have crossed the link between the two (in the guest: the two ends of a veth pair).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seaweed_rdma import Client, _core
from seaweed_rdma.cluster import SIDECAR_DEVICE_ENV, LocalCluster, Sidecar

from .conftest import FUSE_OK, Shape, readers_running
from .mounts import Mount

REPORT = json.loads(_core.verbs_probe())
pytestmark = [
    pytest.mark.rdma, pytest.mark.cluster,
    pytest.mark.skipif(not REPORT["usable"],
                       reason="needs an RDMA device: " + "; ".join(REPORT["reasons"])),
]

CLIENT_DEVICE = os.environ.get("SEAWEED_RDMA_DEVICE", "")
SIDECAR_DEVICE = os.environ.get(SIDECAR_DEVICE_ENV, "")
# Generous deadlines: a verbs handshake and a batch take far longer on soft-RoCE under
# emulation than on hardware, and with fallback off a missed deadline fails the read.
CONNECT_TIMEOUT = 60.0
READ_TIMEOUT = 60.0
# The shapes' chunks are at most 1 MiB; encrypted ones are stored 28 bytes longer and are
# read whole, so they need slots larger than the 1 MiB default.
SLOT_SIZE = 2 << 20
START_TIMEOUT = 300.0  # a verbs sidecar registers its staging pool before it serves
TWO_DEVICES = bool(CLIENT_DEVICE and SIDECAR_DEVICE and CLIENT_DEVICE != SIDECAR_DEVICE)


@pytest.fixture(scope="module")
def verbs_sidecars(cluster: LocalCluster, shapes: dict[str, Shape]) -> Iterator[list[Sidecar]]:
    made = [cluster.add_sidecar(vs, extra=["--transport=verbs"], start_timeout=START_TIMEOUT)
            for vs in cluster.volume_servers]
    yield made
    for sc in made:
        sc.kill()
        cluster.sidecars.remove(sc)


def mapping(sidecars: list[Sidecar]) -> dict[str, str]:
    """``{volume server URL: sidecar address}`` for ``Client(sidecar=...)``."""
    return {sc.volume_server.url: sc.address for sc in sidecars if sc.volume_server is not None}


def verbs_client(filer: str, sidecars: list[Sidecar], **kw: Any) -> Client:
    """A client that may only use verbs: no tcp, and no HTTP fallback either, so an extent
    verbs cannot deliver fails the read instead of hiding."""
    return Client(filer, sidecar=mapping(sidecars), transport="verbs", fallback=False,
                  fast_connect_timeout=CONNECT_TIMEOUT, fast_timeout=READ_TIMEOUT,
                  fast_verbs_slot_size=SLOT_SIZE, **kw)


def sidecar_bytes(sidecars: list[Sidecar]) -> dict[str, int]:
    """Payload bytes the sidecars delivered, per transport, summed over them."""
    total = {"tcp": 0, "verbs": 0}
    for sc in sidecars:
        per = sc.stats()["transports"]
        assert isinstance(per, dict)
        for t in total:
            total[t] += int(per[t]["bytes"])
    return total


def rxe_packets() -> dict[str, tuple[int, int]]:
    """``{device: (sent, received)}`` packet counters of both devices (empty unless two)."""
    out: dict[str, tuple[int, int]] = {}
    if not TWO_DEVICES:
        return out
    for dev in (CLIENT_DEVICE, SIDECAR_DEVICE):
        base = Path("/sys/class/infiniband") / dev / "ports/1/hw_counters"
        if not base.is_dir():
            return {}
        out[dev] = (int((base / "sent_pkts").read_text()), int((base / "rcvd_pkts").read_text()))
    return out


@contextlib.contextmanager
def verbs_only(client: Client, sidecars: list[Sidecar], note: str) -> Iterator[None]:
    """Checks, over the block, that every byte went over verbs on both ends: the client's
    engine and the sidecars count the same verbs bytes, nothing over tcp, nothing over
    HTTP, no fallbacks; with two devices, each device's packet counters moved."""
    before = sidecar_bytes(sidecars)
    engine_before = dict(client.stats().get("engine", {}).get("bytes_by_transport", {}))
    packets_before = rxe_packets()
    yield
    st = client.stats()
    after = sidecar_bytes(sidecars)
    served = {t: after[t] - before[t] for t in after}
    by_transport = st["engine"]["bytes_by_transport"]
    engine = {t: by_transport.get(t, 0) - engine_before.get(t, 0) for t in ("tcp", "verbs")}
    assert st["http"]["bytes"] == 0, (note, st)
    assert st["fallbacks"] == 0, (note, st["fallback_reasons"])
    assert engine["tcp"] == 0, (note, by_transport)
    assert served["tcp"] == 0, (note, "sidecars counted tcp bytes", served)
    assert engine["verbs"] > 0, (note, st)
    assert served["verbs"] == engine["verbs"], (note, "client and sidecars disagree",
                                                served, engine)
    assert st["transport"] == "verbs", (note, st["sidecars"])
    if packets_before:
        packets = rxe_packets()
        sent_by_sidecar = packets[SIDECAR_DEVICE][0] - packets_before[SIDECAR_DEVICE][0]
        got_by_client = packets[CLIENT_DEVICE][1] - packets_before[CLIENT_DEVICE][1]
        assert sent_by_sidecar > 0 and got_by_client > 0, (note, packets_before, packets)


def stored_on_volumes(s: Shape) -> bool:
    """Whether the shape has bytes on volume servers (not empty, not inline in the entry,
    not only holes)."""
    return bool(s.data) and s.note != "inline"


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
            time.sleep(1.0)
            for sc in verbs_sidecars:
                sc.sigkill()
            time.sleep(2.0)
        assert not errors, errors[:5]
        st = c.stats()
        assert st["fallbacks"] > 0 and st["fallback_reasons"], st
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
