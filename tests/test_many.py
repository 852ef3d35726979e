"""``read_many`` / ``readinto_many`` and fsspec ``cat`` of many paths, on a real cluster:
every shape byte-exact, errors per item, the fast path proven on both ends."""

from __future__ import annotations

import pytest

from seaweed_rdma import Client, NotFound
from seaweed_rdma.errors import IsADirectory

from .conftest import Shape, clients_per_filer

pytestmark = [pytest.mark.cluster]


def test_every_shape_in_one_batch(shapes: dict[str, Shape], sidecars):  # type: ignore[no-untyped-def]
    with clients_per_filer(shapes, sidecar=sidecars, transport="tcp") as clients:
        for filer, c in clients.items():
            mine = [s for s in shapes.values() if s.filer == filer]
            got = c.read_many([s.path for s in mine])
            for s, data in zip(mine, got, strict=True):
                assert data == s.data, s.note
            bufs = [bytearray(min(len(s.data), 70_000) + 3) for s in mine]
            counts = c.readinto_many([s.path for s in mine], bufs)
            for s, n, b in zip(mine, counts, bufs, strict=True):
                want = s.data[:len(b)]
                assert n == len(want) and b[:n] == want, s.note


def test_one_bad_path_loses_no_other(cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    good = shapes["multi_chunk"]
    mine = [sc for sc in cluster.sidecars if sc.address in set(sidecars.values())]
    before = sum(int(sc.stats()["bytes"]) for sc in mine)  # type: ignore[call-overload]
    with Client(good.filer, sidecar=sidecars, transport="tcp") as c:
        out = c.read_many([good.path, "/no/such/file", "/shapes", "bad/../path", good.path])
        assert out[0] == good.data and out[4] == good.data
        assert isinstance(out[1], NotFound)
        assert isinstance(out[2], IsADirectory)
        assert isinstance(out[3], ValueError)
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] >= 2 * len(good.data)
        with pytest.raises(NotFound):
            c.read_many([good.path, "/no/such/file"], on_error="raise")
        with pytest.raises(ValueError):
            c.readinto_many([good.path], [])
    served = sum(int(sc.stats()["bytes"]) for sc in mine)  # type: ignore[call-overload]
    assert served - before >= 2 * len(good.data), "the sidecars delivered the bytes"


def test_fsspec_cat_of_many_paths_goes_through_the_batch(cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    fsspec = pytest.importorskip("fsspec")
    mine = [s for s in shapes.values() if s.filer == cluster.filer.grpc_address]
    fs = fsspec.filesystem("seaweedfs", filer=cluster.filer.grpc_address, sidecar=sidecars,
                           transport="tcp", skip_instance_cache=True)
    calls: list[int] = []
    batch = fs.client.read_many

    def counted(paths, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(paths))
        return batch(paths, **kw)

    fs.client.read_many = counted
    got = fs.cat([s.path for s in mine])
    assert {p: got[p] for p in got} == {s.path: s.data for s in mine}
    assert calls == [len(mine)], "one batch for all the paths"
    st = fs.client.stats()
    assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] > 0, st
    missing = fs.cat([mine[0].path, "/no/such"], on_error="return")
    assert isinstance(missing["/no/such"], FileNotFoundError)
