"""Many sidecars over verbs (issue 26): one reader process reading from 2, 4, 8 and 16
sidecars pins at most its budget (``pinned_budget``, 64 MiB): ``VmPin`` of this process and
the engine's own ``pinned_bytes`` are checked at each step. Needs an RDMA device (the
soft-RoCE guest of ci/guest.sh); the sidecars run as processes of their own, so this
process's ``VmPin`` is the engine's alone."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest

from seaweed_rdma._core import Engine, RangeOp
from seaweed_rdma.cluster import LocalCluster, Sidecar

from .verbs import CONNECT_TIMEOUT, NEEDS_DEVICE, READ_TIMEOUT, START_TIMEOUT

pytestmark = [pytest.mark.rdma, pytest.mark.cluster, pytest.mark.slow, NEEDS_DEVICE]

SIDECARS = 16
BUDGET = 64 << 20
SIZES = (4000, 70_000, 300_000, 900_000)

Fid = tuple[int, int, int]
Many = tuple[list[Sidecar], list[tuple[Fid, bytes]]]


def _vm_pin() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmPin:"):
                return int(line.split()[1]) * 1024
    return 0


def _fid(filer_url: str, path: str) -> Fid:
    meta = httpx.get(f"{filer_url}{path}", params={"metadata": "true"}, timeout=30).json()
    (chunk,) = meta["chunks"]
    volume, rest = chunk["file_id"].split(",")
    return int(volume), int(rest[:-8], 16), int(rest[-8:], 16)


@pytest.fixture(scope="module")
def many(cluster: LocalCluster) -> Iterator[Many]:
    rng = random.Random(26)
    files = []
    for i, size in enumerate(SIZES):
        data = rng.randbytes(size)
        path = f"/scale-verbs/f{i}"
        cluster.upload(path, data)
        files.append((_fid(cluster.filer.url, path), data))
    # Each sidecar serves every volume server's directory; small staging, since each one
    # pins its own.
    made = [cluster.add_sidecar(cluster.volume_servers,
                                extra=["--transport=verbs", "--staging-mib=8",
                                       "--max-read=1048576"],
                                start_timeout=START_TIMEOUT)
            for _ in range(SIDECARS)]
    yield made, files
    for sc in made:
        sc.kill()
        cluster.sidecars.remove(sc)


def test_sixteen_sidecars_over_verbs_pin_at_most_the_budget(many: Many) -> None:
    sidecars, files = many
    before = _vm_pin()
    # A Client's slots: 16 of 1 MiB + 4 KiB per connection; auto, so connections that find
    # the budget leased go over tcp.
    engine = Engine(transport="auto", verbs_slot_size=(1 << 20) + 4096, verbs_slots=16,
                    max_inflight=16, pinned_budget=BUDGET,
                    timeout_ms=int(READ_TIMEOUT * 1000),
                    connect_timeout_ms=int(CONNECT_TIMEOUT * 1000))
    rows = []
    try:
        for used in (2, 4, 8, 16):
            ops, at = [], 0
            for sc in sidecars[:used]:
                for (volume, key, cookie), data in files:
                    ops.append(RangeOp(sc.address, volume, key, cookie, 0, len(data), at))
                    at += len(data)
            buf = bytearray(at)
            assert engine.read_into(buf, ops) == [None] * len(ops)
            at = 0
            for _ in sidecars[:used]:
                for _, data in files:
                    assert buf[at:at + len(data)] == data
                    at += len(data)
            stats = engine.stats()
            pinned = _vm_pin() - before
            rows.append((used, pinned >> 10, stats["pinned_bytes"] >> 10,
                         stats["pinned_budget"] >> 10, stats["pinned_leases"],
                         stats["bytes_by_transport"]["verbs"], stats["bytes"]))
            assert stats["pinned_budget"] <= BUDGET, stats
            assert stats["pinned_bytes"] <= stats["pinned_budget"], stats
            assert pinned <= BUDGET, rows
            assert stats["bytes_by_transport"]["verbs"] > 0, stats
    finally:
        print("\nsidecars VmPin_KiB engine_pinned_KiB budget_KiB pools verbs_bytes bytes")
        for row in rows:
            print(" ".join(str(x) for x in row))
        engine.close()
