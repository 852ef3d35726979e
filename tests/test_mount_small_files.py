"""Many small files through the mount: a directory read is listed once and held, so the
next epoch (after the kernel's own entry and attribute timeouts) asks the filer nothing,
while another writer's change still shows through the metadata stream."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from .conftest import FUSE_OK
from .mounts import Mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]


def _until(fn, limit: float = 15.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not fn():
        assert time.monotonic() - t0 < limit, "never happened"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_a_second_epoch_asks_the_filer_nothing(cluster, tmp_path):  # type: ignore[no-untyped-def]
    files = {f"/msmall/d/f{i:03d}.bin": os.urandom(1000 + 97 * i) for i in range(60)}
    for p, b in files.items():
        cluster.upload(p, b)
    sc = cluster.add_sidecar(cluster.volume_servers)
    # The mount's stream replays the 2 s before it starts (metastream.CLOCK_SLACK_NS): the
    # uploads' events would arrive after the first listing and have it made again.
    time.sleep(2.5)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount([f"-filer={cluster.filer.grpc_address}", "-cacheMetaTtlSec=1",
               "-rdma.enabled", f"-rdma.sidecar={sc.address}"], mnt, tmp_path / "mount.log")
    try:
        _until(lambda: m.state()["writes"]["meta_stream_up"])

        def epoch() -> None:
            for p, b in files.items():
                assert (mnt / p.lstrip("/")).read_bytes() == b, p

        epoch()
        first = m.state()
        meta = first["client"]["metadata"]
        # One listing each for the directory, the one above it and the root (at their
        # first lookup, as weed mount lists them), a few fetches; none per file.
        assert meta["listings"] == 3 and meta["fetches"] <= 4, meta
        assert first["native_reads"]["bytes"] > 0, first["native_reads"]
        time.sleep(1.5)  # past the kernel's entry/attr timeout: it asks the mount again
        epoch()
        again = m.state()["client"]["metadata"]
        assert (again["listings"], again["fetches"]) == (meta["listings"], meta["fetches"]), \
            again
        assert again["hits"] > meta["hits"], again  # the kernel did ask; held answered
        state = m.state()
        assert state["client"]["http"]["bytes"] == 0
        # Volume locations known: each file was opened by the native loop (offered at its
        # lookup), or its handle loaded for native reads on the trio thread.
        native = state["native_reads"]
        assert native["opens"] + native["loads_on_loop"] >= len(files), native
        # Each close of a file read here was flushed by the native loop, not pyfuse3.
        assert state["native_reads"]["flushes"] >= 2 * len(files), state["native_reads"]
        # Held is not stale: another writer's overwrite shows (no TTL: the stream says so).
        target = next(iter(files))
        cluster.upload(target, b"rewritten elsewhere")
        _until(lambda: (mnt / target.lstrip("/")).read_bytes() == b"rewritten elsewhere")
        gone = f"/msmall/d/f{len(files) - 1:03d}.bin"
        httpx.delete(f"{cluster.filer.url}{gone}", timeout=30).raise_for_status()
        _until(lambda: not (mnt / gone.lstrip("/")).exists())
        assert (mnt / "msmall/d").is_dir() and gone.rsplit("/", 1)[1] not in \
            os.listdir(mnt / "msmall/d")
    finally:
        m.stop()
