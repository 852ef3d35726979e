"""Volume locations learnt in one master request (``MasterClient.prefetch``), on a real
cluster: the same answers as one ``/dir/lookup`` per volume, and none of those asked."""

from __future__ import annotations

import random

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster
from seaweed_rdma.master import MasterClient

pytestmark = pytest.mark.cluster


def counting_http() -> tuple[httpx.Client, list[str]]:
    paths: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: paths.append(r.url.path)]})
    return http, paths


def test_prefetch_learns_every_volume_in_one_request(cluster: LocalCluster) -> None:
    rng = random.Random(26)
    data = rng.randbytes(9 << 20)
    cluster.upload("/first-calls/spread.bin", data, max_mb=1)
    with Client(cluster.filer.grpc_address) as c:
        vids = sorted({ch.volume_id for ch in c.view("/first-calls/spread.bin").chunks})
    assert len(vids) >= 2, "the file must span several volumes for this test to mean much"
    http, paths = counting_http()
    with http, httpx.Client() as plain:
        master = MasterClient(cluster.master.address, http)
        assert master.prefetch(vids) == len(vids)
        assert paths == ["/dir/status"]
        one_by_one = MasterClient(cluster.master.address, plain)
        for vid in vids:
            assert sorted(master.lookup(vid)) == sorted(one_by_one.lookup(vid))
        assert paths == ["/dir/status"], "a prefetched volume was asked for again"
        # Held now: a second prefetch asks nothing.
        assert master.prefetch(vids) == 0
        assert paths == ["/dir/status"]
        # A volume the master does not have is left to lookup, which reports it.
        master.invalidate(vids[0])
        assert master.prefetch([vids[0], 999_999]) == 1
        assert master.lookup(vids[0])


def test_a_first_read_over_many_volumes_is_right(cluster: LocalCluster,
                                                  sidecars: dict[str, str]) -> None:
    rng = random.Random(27)
    data = rng.randbytes(6 << 20)
    cluster.upload("/first-calls/many.bin", data, max_mb=1)
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        assert c.read("/first-calls/many.bin") == data
        assert c.stats()["fast"]["bytes"] == len(data)


def test_a_fresh_clients_first_read_asks_the_master_once(
        cluster: LocalCluster, sidecars: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(28)
    data = rng.randbytes(6 << 20)
    cluster.upload("/first-calls/once.bin", data, max_mb=1)
    asked: list[tuple[str, str]] = []
    send = httpx.Client.send

    def recording(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        asked.append((request.url.netloc.decode(), request.url.path))
        return send(self, request, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.Client, "send", recording)
    with Client(cluster.filer.grpc_address, sidecar=sidecars, master=cluster.master.address,
                transport="tcp") as c:
        vids = {ch.volume_id for ch in c.view("/first-calls/once.bin").chunks}
        assert len(vids) >= 2
        assert c.read("/first-calls/once.bin") == data
        assert c.stats()["fast"]["bytes"] == len(data)
    to_master = [path for netloc, path in asked if netloc == cluster.master.address]
    assert to_master == ["/dir/status"], to_master
