"""The verbs transport under faults, where this host has an RDMA device (``ci/guest.sh`` runs
these in its soft-RoCE guest). Each fault is real, not simulated in our code:

- the link under the sidecars' device drops every packet (``tc netem loss 100%``), so their
  RDMA writes exhaust the transport's retries and the queue pairs go to the error state;
- the link delays every packet, so READs time out while their RDMA writes are still on the
  way, and those late writes land after the slots' READs were given up;
- the client may pin almost no memory (``prlimit --memlock``, without ``CAP_IPC_LOCK``);
- more reads are in flight than the client has receive slots (counted as ``slot_waits``).

Every read is checked byte for byte, and each fault must leave a reason in the stats.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import Sidecar

from .conftest import Shape, readers_running
from .verbs import (
    CONNECT_TIMEOUT,
    NEEDS_DEVICE,
    SIDECAR_DEVICE,
    TWO_DEVICES,
    mapping,
    sidecar_bytes,
    stored_on_volumes,
    verbs_client,
    verbs_only,
    verbs_sidecars,
)

pytestmark = [pytest.mark.rdma, pytest.mark.cluster, NEEDS_DEVICE]
__all__ = ["verbs_sidecars"]  # a fixture: imported for pytest to find

ON_THE_LINK = pytest.mark.skipif(
    not TWO_DEVICES or shutil.which("tc") is None,
    reason="needs tc (iproute2) and the sidecars and the client on two RDMA devices joined by"
           " a network link to disturb (SEAWEED_RDMA_SIDECAR_DEVICE)")
# Reasons a read may leave the fast path for while the link misbehaves.
LINK_FAULT_REASONS = {"timeout", "lost", "down", "connect", "verbs"}


def sidecar_netdev() -> str:
    """The network device under the sidecars' RDMA device: their RDMA writes leave there."""
    ndevs = Path("/sys/class/infiniband") / SIDECAR_DEVICE / "ports/1/gid_attrs/ndevs"
    for index in ("0", "1"):  # the whole table is slow to read under emulation
        with contextlib.suppress(OSError):
            name = (ndevs / index).read_text().strip()
            if name:
                return name
    pytest.skip(f"cannot tell which network device {SIDECAR_DEVICE} sits on")


@contextlib.contextmanager
def netem(dev: str, *spec: str) -> Iterator[None]:
    """``netem spec`` on ``dev``'s egress (the sidecars' packets) for the block."""
    subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "netem", *spec],
                   check=True, capture_output=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], check=False, timeout=30)


def verbs_failures(sidecars: list[Sidecar]) -> int:
    """Connections the sidecars closed because an RDMA write failed."""
    total = 0
    for sc in sidecars:
        n = sc.stats()["verbs_failures"]
        assert isinstance(n, int)
        total += n
    return total


def engine_verbs_bytes(c: Client) -> int:
    return int(c.stats()["engine"]["bytes_by_transport"].get("verbs", 0))


def until_verbs_carries_a_whole_read(c: Client, s: Shape, limit_s: float = 120) -> None:
    """Reads ``s`` until verbs carries all of one read (the engine probes a sidecar it
    marked down only after its back-off)."""
    deadline = time.monotonic() + limit_s
    while True:
        verbs_before, http_before = engine_verbs_bytes(c), c.stats()["http"]["bytes"]
        assert c.read(s.path) == s.data
        if (engine_verbs_bytes(c) - verbs_before == len(s.data)
                and c.stats()["http"]["bytes"] == http_before):
            return
        assert time.monotonic() < deadline, ("verbs did not come back", c.stats())
        time.sleep(1.0)


@ON_THE_LINK
def test_queue_pairs_in_the_error_state_mid_stream(shapes: dict[str, Shape],
                                                   verbs_sidecars: list[Sidecar]) -> None:
    """The link drops everything while reads run: the sidecars' writes fail, their queue
    pairs go to the error state and they close those connections; no read gets a wrong
    byte (HTTP takes over), and once the link heals verbs carries the reads again."""
    s = shapes["multi_chunk"]
    dev = sidecar_netdev()
    failed_before = verbs_failures(verbs_sidecars)
    with Client(s.filer, sidecar=mapping(verbs_sidecars), transport="verbs",
                fast_timeout=3.0, fast_connect_timeout=CONNECT_TIMEOUT) as c:
        with readers_running(c, {s.path: s.data}, threads=4) as errors:
            deadline = time.monotonic() + 60
            while engine_verbs_bytes(c) == 0:
                assert time.monotonic() < deadline, ("no verbs reads before the fault", c.stats())
                time.sleep(0.2)
            with netem(dev, "loss", "100%"):
                deadline = time.monotonic() + 90
                while verbs_failures(verbs_sidecars) == failed_before:
                    assert time.monotonic() < deadline, "no sidecar saw its RDMA writes fail"
                    time.sleep(0.2)
            time.sleep(1.0)
        assert not errors, errors[:5]
        st = c.stats()
        assert st["fallbacks"] > 0, st
        assert set(st["fallback_reasons"]) <= LINK_FAULT_REASONS, st["fallback_reasons"]
        assert st["last_fallback"]["message"], st
        until_verbs_carries_a_whole_read(c, s)


@ON_THE_LINK
def test_late_writes_of_timed_out_reads_never_land_in_a_reused_slot(
        shapes: dict[str, Shape], verbs_sidecars: list[Sidecar]) -> None:
    """The link delays the sidecars' packets past the client's deadline: READs time out
    while their RDMA writes are still on the way. Those writes land later, into slots the
    client kept retired for them; reads that follow, on the same few slots, get their own
    bytes. The sidecars served more verbs bytes than the client took: the late writes."""
    files = {s.path: s.data for s in shapes.values()
             if stored_on_volumes(s) and s.filer == shapes["multi_chunk"].filer}
    dev = sidecar_netdev()
    before = sidecar_bytes(verbs_sidecars)
    with Client(shapes["multi_chunk"].filer, sidecar=mapping(verbs_sidecars),
                transport="verbs", fast_timeout=0.2, fast_verbs_slots=4,
                fast_connect_timeout=CONNECT_TIMEOUT) as c:
        # Below the transport's retry budget (7 tries of ~67 ms), so writes arrive late
        # rather than fail.
        with netem(dev, "delay", "120ms"), readers_running(c, files, threads=4) as errors:
            deadline = time.monotonic() + 90
            while "timeout" not in c.stats()["fallback_reasons"]:
                assert time.monotonic() < deadline, ("no read timed out", c.stats())
                time.sleep(0.2)
            time.sleep(3.0)
        assert not errors, errors[:5]
        during = engine_verbs_bytes(c)
        with readers_running(c, files, threads=4) as errors:
            deadline = time.monotonic() + 120
            while engine_verbs_bytes(c) - during < (8 << 20):
                assert time.monotonic() < deadline, ("verbs did not resume", c.stats())
                time.sleep(0.5)
        assert not errors, errors[:5]
        served = sidecar_bytes(verbs_sidecars)["verbs"] - before["verbs"]
        taken = engine_verbs_bytes(c)
        assert served > taken, ("no write landed after its READ was given up", served, taken)


def test_more_reads_in_flight_than_receive_slots(shapes: dict[str, Shape],
                                                 verbs_sidecars: list[Sidecar]) -> None:
    """Eight readers on two slots: READs wait for a free slot (the engine counts each
    wait, so the test knows they did); every byte over verbs."""
    files = {s.path: s.data for s in shapes.values()
             if stored_on_volumes(s) and s.filer == shapes["multi_chunk"].filer}
    with verbs_client(shapes["multi_chunk"].filer, verbs_sidecars, fast_verbs_slots=2) as c, \
            verbs_only(c, verbs_sidecars, "2 slots"):
        waits_before = c.stats()["engine"]["slot_waits"]
        with readers_running(c, files, threads=8) as errors:
            deadline = time.monotonic() + 60
            while c.stats()["engine"]["slot_waits"] - waits_before < 8:
                assert time.monotonic() < deadline, ("no READ waited for a slot", c.stats())
                time.sleep(0.2)
            time.sleep(2.0)
        assert not errors, errors[:5]
        assert c.stats()["engine"]["slot_waits"] > waits_before


MEMLOCK_SCRIPT = """
import hashlib, json, sys
from seaweed_rdma import Client
from seaweed_rdma.errors import FastPathFailed
filer, sidecars, path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
out = {}
with Client(filer, sidecar=sidecars, transport="verbs", fast_connect_timeout=60) as c:
    out["sha256"] = hashlib.sha256(c.read(path)).hexdigest()
    out["stats"] = c.stats()
with Client(filer, sidecar=sidecars, transport="verbs", fallback=False) as c:
    try:
        c.read(path)
        out["strict"] = "read"
    except FastPathFailed as e:
        out["strict"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.skipif(not (shutil.which("prlimit") and shutil.which("setpriv")),
                    reason="needs prlimit and setpriv (util-linux)")
def test_memlock_too_small_for_the_receive_slots(shapes: dict[str, Shape],
                                                 verbs_sidecars: list[Sidecar]) -> None:
    """A client that may lock 64 KiB (and lacks ``CAP_IPC_LOCK``) cannot register its
    slots: its reads come over HTTP, right, with a reason naming ``ulimit -l``; with
    fallback off they fail with that reason."""
    s = shapes["multi_chunk"]
    cmd = ["prlimit", "--memlock=65536:65536", "--",
           "setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--",
           sys.executable, "-c", MEMLOCK_SCRIPT,
           s.filer, json.dumps(mapping(verbs_sidecars)), s.path]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert got.returncode == 0, got.stderr[-3000:]
    out = json.loads(got.stdout.strip().splitlines()[-1])
    assert out["sha256"] == hashlib.sha256(s.data).hexdigest()
    st = out["stats"]
    assert st["fast"]["bytes"] == 0 and st["http"]["bytes"] > 0, st
    assert set(st["fallback_reasons"]) == {"verbs"}, st["fallback_reasons"]
    assert "ulimit -l" in st["last_fallback"]["message"], st["last_fallback"]
    assert "ulimit -l" in out["strict"], out["strict"]
