"""A cluster that is not two servers (issue 26): many volume servers, each with its
sidecar on loopback, reads spread over all of them. Over tcp the reader stays flat:
threads and memory do not grow with the servers it reads from, and its connections stay
within the engine's cap (``max_conns``), the least recently used idle one closed first.

``SEAWEED_RDMA_SCALE_SERVERS`` sets the count (32; each volume server is a Go process of
about 135 MiB here, and 32 of them with their sidecars start in about 15 s on 2 cores)."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma._core import Engine, RangeOp
from seaweed_rdma.cluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SERVERS = int(os.environ.get("SEAWEED_RDMA_SCALE_SERVERS", "32"))
FILES_PER_SERVER = 3
SIZE = 96 * 1024


class Wide:
    """The cluster, its files, and which volume server holds each file."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.files: dict[str, bytes] = {}
        # path -> index of the volume server that holds its (one) chunk
        self.server_of: dict[str, int] = {}
        # path -> (volume, key, cookie) of its chunk
        self.fid_of: dict[str, tuple[int, int, int]] = {}


def _data_nodes(cluster: LocalCluster) -> list[dict[str, object]]:
    status = httpx.get(f"{cluster.master.url}/dir/status", timeout=10).json()
    return [node for dc in status["Topology"].get("DataCenters") or []
            for rack in dc.get("Racks") or [] for node in rack.get("DataNodes") or []]


def _grow_one_volume_each(cluster: LocalCluster) -> dict[int, int]:
    """One writable volume on every volume server; returns volume id -> server index."""
    deadline = time.monotonic() + 60
    # A volume server serves HTTP before its first heartbeat reaches the master.
    while len(_data_nodes(cluster)) < SERVERS:
        assert time.monotonic() < deadline, _data_nodes(cluster)
        time.sleep(0.2)
    for server in cluster.volume_servers:
        r = httpx.get(f"{cluster.master.url}/vol/grow",
                      params={"count": "1", "replication": "000",
                              "dataNode": server.address}, timeout=30)
        assert r.status_code < 300, r.text
    index = {s.address: i for i, s in enumerate(cluster.volume_servers)}
    owners: dict[int, int] = {}
    for node in _data_nodes(cluster):
        for v in str(node.get("VolumeIds", "")).split():
            if "-" in v:
                lo, hi = (int(x) for x in v.split("-"))
                owners.update(dict.fromkeys(range(lo, hi + 1), index[str(node["Url"])]))
            elif v:
                owners[int(v)] = index[str(node["Url"])]
    return owners


def _fid(filer_url: str, path: str) -> tuple[int, int, int]:
    meta = httpx.get(f"{filer_url}{path}", params={"metadata": "true"}, timeout=10).json()
    chunks = meta["chunks"]
    assert len(chunks) == 1, chunks
    fid = chunks[0]["file_id"]
    volume, rest = fid.split(",")
    key, cookie = int(rest[:-8], 16), int(rest[-8:], 16)
    return int(volume), key, cookie


@pytest.fixture(scope="module")
def wide() -> Iterator[Wide]:
    started = time.monotonic()
    with LocalCluster(volumes=SERVERS) as cluster:
        for server in cluster.volume_servers:
            cluster.add_sidecar(server)
        owners = _grow_one_volume_each(cluster)
        w = Wide(cluster)
        rng = random.Random(26)
        held = [0] * SERVERS
        n = 0
        # Files land on volumes the master picks; keep writing until every server holds some.
        while min(held) < FILES_PER_SERVER and n < SERVERS * FILES_PER_SERVER * 8:
            path = f"/scale/f{n:04d}"
            data = rng.randbytes(SIZE)
            cluster.upload(path, data)
            volume, key, cookie = _fid(cluster.filer.url, path)
            server = owners[volume]
            n += 1
            if held[server] >= FILES_PER_SERVER:
                continue
            held[server] += 1
            w.files[path] = data
            w.server_of[path] = server
            w.fid_of[path] = (volume, key, cookie)
        assert min(held) >= 1, held
        print(f"\n{SERVERS} volume servers and sidecars, {n} files written: "
              f"{time.monotonic() - started:.1f} s")
        yield w


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_tcp_reader_is_flat_from_2_to_all_servers(wide: Wide) -> None:
    cluster = wide.cluster
    steps = sorted({2, max(2, SERVERS // 4), max(2, SERVERS // 2), SERVERS})
    base_sockets = _sockets()
    curve = []
    with Client(cluster.filer.grpc_address, sidecar=cluster.sidecar_map(),
                transport="tcp") as c:
        # Warm up what does not depend on the servers (the metadata stream's gRPC threads,
        # the engine's runtime) on one server's files first.
        for path, data in wide.files.items():
            if wide.server_of[path] == 0:
                assert c.read(path) == data
        time.sleep(0.5)
        for used in steps:
            # Twice over the files of the first `used` servers, so every connection is
            # made and then reused.
            for _ in range(2):
                for path, data in wide.files.items():
                    if wide.server_of[path] < used:
                        assert c.read(path) == data
            engine = c.stats()["engine"]
            curve.append((used, _threads(), _rss_kib(), _sockets() - base_sockets,
                          engine["open_conns"], engine["sidecars"]))
        stats = c.stats()
    print("\nservers threads rss_kib sockets engine_conns sidecars")
    for row in curve:
        print(" ".join(str(x) for x in row))
    assert stats["http"]["bytes"] == 0, stats
    first, last = curve[0], curve[-1]
    assert last[5] == SERVERS, curve
    # Threads: the engine's two workers and the Client's own, whatever the servers.
    assert last[1] <= first[1] + 1, curve
    # Memory: a few KiB per connection, not MiB per server.
    assert last[2] - first[2] < 24 * 1024, curve
    # Descriptors: within the engine's cap (128 by default), plus the filer's and
    # master's HTTP connections.
    assert all(row[4] <= 128 for row in curve), curve
    assert last[3] <= 128 + 16, curve


def test_a_connection_cap_below_the_servers_holds_with_lru_eviction(wide: Wide) -> None:
    cap = 8
    sidecars = [s.address for s in wide.cluster.sidecars]
    engine = Engine(transport="tcp", max_conns=cap)
    try:
        for _ in range(2):
            for path, data in wide.files.items():
                volume, key, cookie = wide.fid_of[path]
                addr = sidecars[wide.server_of[path]]
                buf = bytearray(len(data))
                out = engine.read_into(buf, [RangeOp(addr, volume, key, cookie, 0, len(data), 0)])
                assert out == [None]
                assert bytes(buf) == data
                assert engine.stats()["open_conns"] <= cap
        stats = engine.stats()
        assert stats["sidecars"] == SERVERS, stats
        assert stats["evicted"] > 0 and stats["over_cap"] == 0, stats
    finally:
        engine.close()


def test_idle_connections_are_reaped(wide: Wide) -> None:
    sidecars = [s.address for s in wide.cluster.sidecars]
    engine = Engine(transport="tcp", idle_timeout_ms=200)
    try:
        for path, data in list(wide.files.items())[:8]:
            volume, key, cookie = wide.fid_of[path]
            buf = bytearray(len(data))
            op = RangeOp(sidecars[wide.server_of[path]], volume, key, cookie, 0, len(data), 0)
            assert engine.read_into(buf, [op]) == [None]
        assert engine.stats()["open_conns"] > 0
        deadline = time.monotonic() + 5
        while engine.stats()["open_conns"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = engine.stats()
        assert stats["open_conns"] == 0 and stats["reaped"] > 0, stats
    finally:
        engine.close()

