"""The sidecar under bad input and churn: garbage, truncated and oversized frames, a flood
of connections, clients that never read their answers, slowloris HTTP clients, a vacuum
while reads run. It must stay up and keep serving others."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import sys
import time
from pathlib import Path

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma._core import parse_fid
from seaweed_rdma.cluster import LocalCluster, Server, Sidecar, free_port

from .conftest import readers_running

pytestmark = [pytest.mark.cluster]

HELLO = b"SWRD" + struct.pack("<HHII", 1, 1, 64, 0)


def _connect(addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def _handshake(addr: str, inflight: int = 64) -> socket.socket:
    s = _connect(addr)
    s.sendall(HELLO[:8] + struct.pack("<I", inflight) + HELLO[12:])
    ack = b""
    while len(ack) < 32:
        piece = s.recv(32 - len(ack))
        assert piece, "sidecar closed during the handshake"
        ack += piece
    assert ack[:4] == b"SWRD" and struct.unpack("<H", ack[4:6])[0] == 1
    return s


def _closed_by_peer(s: socket.socket, timeout: float = 10.0) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    finally:
        s.close()


def _still_serves(cluster, sidecars, path: str, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        assert c.read(path) == data
        st = c.stats()
        assert st["fallbacks"] == 0 and st["http"]["bytes"] == 0, st["fallback_reasons"]


@pytest.fixture(scope="module")
def target(cluster, sidecars):  # type: ignore[no-untyped-def]
    data = random.Random(8).randbytes(2_000_000)
    cluster.upload("/robust/file.bin", data, max_mb=1)
    return "/robust/file.bin", data


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\n\r\n",                      # not our protocol at all
    b"SWRD",                                          # truncated hello
    b"\x00" * 64,                                     # zeros
])
def test_garbage_before_handshake(cluster, sidecars, target, payload):  # type: ignore[no-untyped-def]
    addr = next(iter(sidecars.values()))
    s = _connect(addr)
    s.sendall(payload)
    if payload == b"SWRD":
        s.shutdown(socket.SHUT_WR)
    assert _closed_by_peer(s)
    _still_serves(cluster, sidecars, *target)


def test_bad_frames_after_handshake(cluster, sidecars, target):  # type: ignore[no-untyped-def]
    addr = next(iter(sidecars.values()))
    frames = [
        bytes([99]) + b"\x00" * 15,                                     # unknown kind
        struct.pack("<BBHIII", 1, 0, 0, 1, 1 << 30, 0),                  # oversized body
        struct.pack("<BBHIII", 1, 0, 0, 1, 50, 0) + b"\x01" * 10,        # truncated body
    ]
    for frame in frames:
        s = _handshake(addr)
        s.sendall(frame)
        if frame.endswith(b"\x01" * 10):
            s.shutdown(socket.SHUT_WR)
        assert _closed_by_peer(s), frame[:16]
    # A well-framed READ whose body does not parse is answered BAD_REQUEST.
    s = _handshake(addr)
    s.sendall(struct.pack("<BBHIII", 1, 0, 0, 7, 5, 0) + b"\x01" * 5)
    s.settimeout(10)
    answer = b""
    while len(answer) < 32:
        piece = s.recv(32 - len(answer))
        if not piece:
            break
        answer += piece
    s.close()
    # The frame was whole, so the sidecar answers it and stays in step.
    assert len(answer) == 32, answer
    kind, _, _, request_id, _body_len, _ = struct.unpack("<BBHIII", answer[:16])
    assert (kind, request_id, answer[16]) == (2, 7, 3)  # DATA, same id, BAD_REQUEST
    _still_serves(cluster, sidecars, *target)


def _conns(sidecar_addrs: set[str], cluster) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Each sidecar's ``connections`` stats, by protocol address."""
    return {sc.address: dict(sc.stats()["connections"])  # type: ignore[call-overload]
            for sc in cluster.sidecars if sc.address in sidecar_addrs}


def test_connection_flood(cluster, sidecars, target):  # type: ignore[no-untyped-def]
    """300 idle connections on every sidecar, and reads still come over the fast path.

    Proven: each sidecar took all 300 (accepted, or refused at --max-connections) before
    the read, the read's bytes came from the flooded sidecars with nothing over HTTP, and
    once the flood closes its connections are gone from the sidecars."""
    addrs = set(sidecars.values())
    before = _conns(addrs, cluster)
    assert set(before) == addrs
    served = sum(int(sc.stats()["bytes"]) for sc in cluster.sidecars  # type: ignore[call-overload]
                 if sc.address in addrs)
    held = []
    try:
        for addr in addrs:
            for _ in range(300):
                held.append(_connect(addr))
        deadline = time.monotonic() + 30
        while True:
            now = _conns(addrs, cluster)
            taken = {a: (now[a]["total"] + now[a]["refused"])
                     - (before[a]["total"] + before[a]["refused"]) for a in addrs}
            if all(n >= 300 for n in taken.values()):
                break
            assert time.monotonic() < deadline, ("the flood did not reach the sidecars", taken)
            time.sleep(0.2)
        _still_serves(cluster, sidecars, *target)
        during = sum(int(sc.stats()["bytes"]) for sc in cluster.sidecars  # type: ignore[call-overload]
                     if sc.address in addrs)
        assert during - served >= len(target[1]), (served, during)
        assert any(now[a]["open"] >= before[a]["open"] + 300 for a in addrs), (before, now)
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 30
    while any(c["open"] > before[a]["open"] for a, c in _conns(addrs, cluster).items()):
        assert time.monotonic() < deadline, ("flood connections still open", _conns(addrs, cluster))
        time.sleep(0.2)
    _still_serves(cluster, sidecars, *target)


def test_vacuum_while_reading():  # type: ignore[no-untyped-def]
    rng = random.Random(21)
    with LocalCluster(volumes=1) as cl:
        vs = cl.volume_servers[0]
        cl.add_sidecar(vs)
        keep = {f"/vac/keep{i}.bin": rng.randbytes(rng.randrange(1000, 200_000))
                for i in range(30)}
        for path, data in keep.items():
            cl.upload(path, data)
        for i in range(30):
            cl.upload(f"/vac/drop{i}.bin", rng.randbytes(100_000))
        with Client(cl.filer.grpc_address, sidecar=cl.sidecar_map(), transport="tcp",
                    meta_ttl=0.0) as c:
            for i in range(30):
                httpx.delete(f"{cl.filer.url}/vac/drop{i}.bin")
            with readers_running(c, keep, threads=4, sizes=(None,)) as errors:
                time.sleep(0.5)
                before = {d.name: d.stat().st_ino for d in vs.dir.glob("*.dat")}
                r = httpx.get(f"{cl.master.url}/vol/vacuum",
                              params={"garbageThreshold": "0.0001"}, timeout=120)
                assert r.status_code == 200, r.text
                time.sleep(1.5)
            after = {d.name: d.stat().st_ino for d in vs.dir.glob("*.dat")}
            assert any(before.get(k) != v for k, v in after.items()), "vacuum compacted nothing"
            assert not errors, errors[:5]
            for p, data in keep.items():
                assert c.read(p) == data
            st = c.stats()
            # Every byte over the fast path, and read by the sidecar from the volume files
            # (the compacted ones after the vacuum), not fetched from the volume server.
            assert st["fast"]["bytes"] > 0 and st["http"]["bytes"] == 0, st
            assert st["fallbacks"] == 0, st["fallback_reasons"]
            sources = cl.sidecars[0].stats()["sources"]
            assert sources["upstream"]["reads"] == 0 and sources["local"]["reads"] > 0, sources


def _read_frame(request_id: int, fid: str, offset: int, length: int) -> bytes:
    """A READ frame for ``length`` bytes at ``offset`` of the needle ``fid`` (tcp)."""
    vid, key, cookie = parse_fid(fid)
    body = struct.pack("<IIQQIIIIH", vid, cookie, key, offset, length, 0, 0, 0, 0)
    return struct.pack("<BBHIII", 1, 0, 0, request_id, len(body), 0) + body


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait_for(what: str, check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Polls ``check()`` until it returns something true, for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() >= deadline:
            assert got, f"{what}: not within {timeout}s (last: {got!r})"
            return got
        time.sleep(0.1)


@pytest.fixture
def own_sidecar(cluster, target, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts a sidecar of its own (not in ``cluster.sidecars``, so other tests never see it)
    over the volume server that holds the target's first chunk, with the flags given."""
    started: list[Sidecar] = []

    def start(*extra: str) -> tuple[Sidecar, Server, str]:
        with Client(cluster.filer.grpc_address) as c:
            fid = c.entry(target[0]).chunks[0].file_id
            vs_url = c.master.lookup(parse_fid(fid)[0])[0]
        vs = next(v for v in cluster.volume_servers if v.url == vs_url)
        port, http_port = free_port(), free_port()
        argv = [sys.executable, "-m", "seaweed_rdma.cli", "sidecar", f"--dir={vs.dir}",
                f"--listen=127.0.0.1:{port}", f"--volume-server={vs.url}",
                f"--http=127.0.0.1:{http_port}", *extra]
        sc = Sidecar("sidecar", port, http_port, vs.dir, None,  # type: ignore[arg-type]
                     tmp_path / f"sidecar{len(started)}.log", argv, vs)
        sc.start()
        started.append(sc)
        return sc, vs, fid

    yield start
    for sc in started:
        sc.kill()


def _stats(sc: Sidecar) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{sc.http_url}/stats", timeout=10).json()  # type: ignore[no-any-return]


def test_readers_that_never_read_do_not_starve_others(cluster, target, own_sidecar):  # type: ignore[no-untyped-def]
    """Two connections each ask for 256 x 1 MiB and read nothing. Before, they held all 256
    staging slabs and every other client got BUSY for as long as they stayed connected."""
    sc, vs, fid = own_sidecar("--write-timeout-secs=3")
    path, data = target
    chunk = 1 << 20
    hogs = []
    for _ in range(2):
        s = _handshake(sc.address, inflight=256)
        s.sendall(b"".join(_read_frame(i + 1, fid, 0, chunk) for i in range(256)))
        hogs.append(s)
    try:
        per_connection = _stats(sc)["staging"]["per_connection"]
        held = _wait_for("the hogs take staging",
                         lambda: _stats(sc)["staging"]["in_use"] >= per_connection)
        assert held
        assert _stats(sc)["staging"]["in_use"] <= 2 * per_connection < 256
        # Another client is served on the fast path, without a single BUSY fallback.
        with Client(cluster.filer.grpc_address, sidecar={vs.url: sc.address},
                    transport="tcp") as c:
            assert c.read(path, 0, chunk) == data[:chunk]
            st = c.stats()
            assert st["fallbacks"] == 0, st["fallback_reasons"]
        # Having taken nothing for --write-timeout-secs, both are closed and their slabs
        # come back; the closed client left no connection behind either.
        stats = _wait_for("the stalled connections are closed", lambda: (
            (st := _stats(sc))["connections"]["stalled"] == 2
            and st["staging"]["in_use"] == 0 and st["connections"]["open"] == 0 and st))
        assert stats["connections"]["refused"] == 0
        metrics = httpx.get(f"{sc.http_url}/metrics", timeout=10).text
        assert "seaweed_rdma_sidecar_connections_stalled_total 2\n" in metrics
        for s in hogs:
            assert _closed_by_peer(s, timeout=10)
    finally:
        for s in hogs:
            s.close()


def test_http_slowloris(own_sidecar):  # type: ignore[no-untyped-def]
    """300 connections that send a partial request header. Before, every one stayed open
    for good (the sidecar went from 26 to 326 fds)."""
    sc, _, _ = own_sidecar("--http-header-timeout-secs=2")
    pid = sc.proc.pid
    before = _fds(pid)
    started = time.monotonic()
    held: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", sc.grpc_port), timeout=5)
            with contextlib.suppress(OSError):  # refused at the cap already
                s.sendall(b"GET /health HTTP/1.1\r\nHost: sidecar\r\nX-Slow: 1")
            held.append(s)
        during = _fds(pid)
        # At most --http-max-connections (256) are held, and only until the timeout.
        assert during <= before + 256 + 8, (before, during)
        # One deadline for all of them, so a sidecar that keeps them open fails in 15 s.
        deadline = started + 15
        for s in held:
            assert _closed_by_peer(s, timeout=max(0.1, deadline - time.monotonic()))
        after = _wait_for("fds back to where they were",
                          lambda: (n := _fds(pid)) <= before + 4 and n)
        print(f"sidecar fds: {before} before, {during} under 300 slowloris connections, "
              f"{after} after")
        stats = _stats(sc)["http_connections"]
        assert stats["header_timeouts"] + stats["refused"] >= 300, stats
        assert httpx.get(f"{sc.http_url}/health", timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()
