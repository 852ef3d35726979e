"""Every file shape byte-exact over RDMA verbs, and the kill-the-sidecar test, where this
host has a usable RDMA device (soft-RoCE ``rxe`` or hardware). Skips, saying why, elsewhere."""

from __future__ import annotations

import json
import random
import time

import pytest

from seaweed_rdma import Client, _core

from .conftest import Shape, readers_running

REPORT = json.loads(_core.verbs_probe())
pytestmark = [
    pytest.mark.rdma, pytest.mark.cluster,
    pytest.mark.skipif(not REPORT["usable"],
                       reason="needs an RDMA device: " + "; ".join(REPORT["reasons"])),
]


@pytest.fixture(scope="module")
def verbs_sidecars(cluster, shapes):  # type: ignore[no-untyped-def]
    made = [cluster.add_sidecar(vs, extra=["--transport=verbs"]) for vs in
            cluster.volume_servers]
    yield {sc.volume_server.url: sc.address for sc in made if sc.volume_server is not None}
    for sc in made:
        sc.kill()


def test_every_shape_over_verbs(shapes: dict[str, Shape], verbs_sidecars):  # type: ignore[no-untyped-def]
    for s in shapes.values():
        with Client(s.filer, sidecar=verbs_sidecars, transport="verbs") as c:
            assert c.read(s.path) == s.data, s.note
            rng = random.Random(s.note)
            for _ in range(10):
                off = rng.randrange(0, len(s.data) + 1)
                assert c.read(s.path, off, 100_000) == s.data[off:off + 100_000]
            st = c.stats()
            if s.data and st["fast"]["bytes"]:
                assert st["transport"] == "verbs"
                assert st["engine"]["bytes_by_transport"]["verbs"] > 0


def test_sidecar_killed_during_verbs_reads(cluster, shapes, verbs_sidecars):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    with Client(cluster.filer.grpc_address, sidecar=verbs_sidecars, transport="verbs",
                fast_timeout=2.0) as c:
        victims = [sc for sc in cluster.sidecars if sc.address in verbs_sidecars.values()]
        with readers_running(c, {s.path: s.data}, threads=4) as errors:
            time.sleep(1.0)
            for sc in victims:
                sc.sigkill()
            time.sleep(2.0)
        assert not errors, errors[:5]
        for sc in victims:
            sc.start()
