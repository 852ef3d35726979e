"""Held metadata against a real filer: a directory read is listed once and its files then
cost no filer request; changes by other writers (the filer's HTTP API, `weed mount`) show
through the metadata stream; without the stream entries expire by TTL; the held set is
bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from seaweed_rdma import Client, NotFound
from seaweed_rdma.cluster import LocalCluster

from .conftest import FUSE_OK, weed_mount

pytestmark = [pytest.mark.cluster]


def _files(cluster: LocalCluster, d: str, n: int) -> dict[str, bytes]:
    out = {f"{d}/f{i:03d}.bin": b"held %d " % i * 50 for i in range(n)}
    for p, b in out.items():
        cluster.upload(p, b)
    return out


def _until(fn, limit: float = 15.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``fn()`` is true; fails past ``limit``."""
    t0 = time.monotonic()
    while not fn():
        assert time.monotonic() - t0 < limit, "the change never showed"
        time.sleep(0.005)
    return time.monotonic() - t0


def _stream_up(c: Client) -> None:
    _until(lambda: c.stats()["metadata"]["stream_up"])


def test_a_directory_read_costs_one_listing(cluster):  # type: ignore[no-untyped-def]
    files = _files(cluster, "/held/one", 30)
    # The stream replays the last 2 s of events when it starts (metastream.CLOCK_SLACK_NS);
    # an upload's intermediate versions would send this directory to be listed again.
    time.sleep(2.5)
    with Client(cluster.filer.grpc_address) as c:
        for p, b in files.items():
            assert c.read(p) == b
        m = c.stats()["metadata"]
        assert m["listings"] == 1 and m["fetches"] <= 2, m
        for p, b in files.items():  # a second epoch: nothing asked of the filer
            assert c.read(p) == b
        m2 = c.stats()["metadata"]
        assert (m2["listings"], m2["fetches"]) == (m["listings"], m["fetches"]), m2
        # A name the held listing lacks is asked for: another client may have just made it.
        with pytest.raises(NotFound):
            c.read("/held/one/absent.bin")
        cluster.upload("/held/one/just-made.bin", b"new")
        assert c.read("/held/one/just-made.bin") == b"new"
        names = sorted([*(p.rsplit("/", 1)[1] for p in files), "just-made.bin"])
        _until(lambda: sorted(c.listdir("/held/one")) == names)
        assert c.stats()["metadata"]["events"] >= 1  # the new name came through the stream


def test_other_writers_changes_show_through_the_stream(cluster):  # type: ignore[no-untyped-def]
    files = _files(cluster, "/held/two", 5)
    paths = sorted(files)
    with Client(cluster.filer.grpc_address, meta_ttl=3600) as c:
        for p in paths:
            c.read(p)
        _stream_up(c)
        cluster.upload(paths[0], b"rewritten by another writer")
        took = _until(lambda: c.read(paths[0]) == b"rewritten by another writer")
        httpx.delete(f"{cluster.filer.url}{paths[1]}").raise_for_status()

        def gone() -> bool:
            try:
                c.read(paths[1])
            except NotFound:
                return True
            return False

        _until(gone)
        r = httpx.post(f"{cluster.filer.url}/held/two/moved.bin",
                       params={"mv.from": paths[2]})
        assert r.status_code < 300, r.text
        def moved() -> bool:
            # The new name can be fetched before the event comes (a name a held listing
            # lacks is asked for); the old one is held until the event drops it.
            try:
                c.read(paths[2])
            except NotFound:
                return True
            return False

        _until(moved)
        assert c.read("/held/two/moved.bin") == files[paths[2]]
        cluster.upload("/held/two/new.bin", b"a new file")
        _until(lambda: "new.bin" in c.listdir("/held/two"))
        assert c.stats()["metadata"]["events"] >= 4
        # With a one-hour TTL, only the stream can have shown these within seconds.
        assert took < 10


@pytest.mark.fuse
@pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")
def test_a_change_through_weed_mount_shows(cluster, tmp_path: Path):  # type: ignore[no-untyped-def]
    files = _files(cluster, "/held/three", 3)
    path = sorted(files)[0]
    with Client(cluster.filer.grpc_address, meta_ttl=3600) as c, \
            weed_mount(cluster.filer, tmp_path) as mnt:
        for p in files:
            c.read(p)
        _stream_up(c)
        with open(mnt / path.lstrip("/"), "wb") as f:
            f.write(b"through weed mount")
            os.fsync(f.fileno())
        _until(lambda: c.read(path) == b"through weed mount", limit=30)


def test_without_the_stream_entries_expire_by_ttl(cluster):  # type: ignore[no-untyped-def]
    files = _files(cluster, "/held/four", 3)
    path = sorted(files)[0]
    with Client(cluster.filer.grpc_address, meta_stream=False, meta_ttl=0.5) as c:
        assert c.read(path) == files[path]
        cluster.upload(path, b"changed")
        assert c.read(path) == files[path]  # held: no stream, TTL not yet passed
        time.sleep(0.6)
        assert c.read(path) == b"changed"
        assert not c.stats()["metadata"]["stream_up"]


def test_the_held_set_is_bounded(cluster):  # type: ignore[no-untyped-def]
    files = _files(cluster, "/held/five", 40)
    with Client(cluster.filer.grpc_address, meta_max_entries=10) as c:
        for p, b in files.items():
            assert c.read(p) == b
        m = c.stats()["metadata"]
        assert m["entries"] <= 10 and m["evictions"] > 0, m
        # Evicted names no longer prove absence: the directory is not held whole.
        assert m["directories"] == 0, m


def test_the_stream_waits_for_a_second_fetch_or_a_second(cluster):  # type: ignore[no-untyped-def]
    """One path looked up and read (a notebook's first call) pays for no gRPC stream; the
    second fetch starts it, and so does the timer when no second fetch comes. Either way it
    replays from before the first fetch, so a change made in between is still seen."""
    cluster.upload("/held/late/a.bin", b"a0")
    cluster.upload("/held/late/b.bin", b"b0")
    with Client(cluster.filer.grpc_address, meta_ttl=3600, meta_list_dirs=False) as c:
        assert c.read("/held/late/a.bin") == b"a0"
        m = c.stats()["metadata"]
        assert m["fetches"] == 1 and not m["stream_up"], m
        assert "events" not in m.get("stream", {}) or m["stream"]["events"] == 0
        cluster.upload("/held/late/a.bin", b"a1")  # before the stream runs: replayed later
        assert c.read("/held/late/b.bin") == b"b0"  # the second fetch starts it
        _stream_up(c)
        _until(lambda: c.read("/held/late/a.bin") == b"a1")
    with Client(cluster.filer.grpc_address, meta_ttl=3600, meta_list_dirs=False) as c:
        assert c.read("/held/late/b.bin") == b"b0"
        took = _until(lambda: c.stats()["metadata"]["stream_up"])
        assert took >= 0.5, took  # started by the timer (STREAM_START_S), not at once
        cluster.upload("/held/late/b.bin", b"b1")
        _until(lambda: c.read("/held/late/b.bin") == b"b1")  # (no TTL: the stream said so)


def test_a_listed_directory_has_its_volumes_located_at_once(cluster):  # type: ignore[no-untyped-def]
    files = _files(cluster, "/held/located", 30)
    time.sleep(2.5)  # as above: no replayed upload events to send it to be listed again
    with Client(cluster.filer.grpc_address) as c:
        first = list(files)[:2]
        for p in first:  # the second lookup lists the directory
            assert c.read(p) == files[p]
        assert c.stats()["metadata"]["listings"] == 1
        held = {p: c.held(p) for p in files}
        assert all(h is not None for h in held.values()), held
        read = {ch.volume_id for p in first for ch in held[p][0].chunks}  # type: ignore[index]
        others = {ch.volume_id for h in held.values() for ch in h[0].chunks} - read  # type: ignore[index]
        assert len(others) >= 2, f"the uploads landed on too few volumes: {others}"
        # Volumes no read has touched are known: one master request at the listing.
        master = c._live().master
        assert all(master.known(v) for v in others), others
        for p, b in files.items():
            assert c.read(p) == b
