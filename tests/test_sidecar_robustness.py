"""The sidecar under bad input and churn: garbage, truncated and oversized frames, a flood
of connections, a vacuum while reads run. It must stay up and keep serving others."""

from __future__ import annotations

import random
import socket
import struct
import time

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

from .conftest import readers_running

pytestmark = [pytest.mark.cluster]

HELLO = b"SWRD" + struct.pack("<HHII", 1, 1, 64, 0)


def _connect(addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def _handshake(addr: str) -> socket.socket:
    s = _connect(addr)
    s.sendall(HELLO)
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
    if answer:  # closing the connection would be acceptable too
        kind, _, _, request_id, _body_len, _ = struct.unpack("<BBHIII", answer[:16])
        assert (kind, request_id, answer[16]) == (2, 7, 3)  # DATA, same id, BAD_REQUEST
    _still_serves(cluster, sidecars, *target)


def test_connection_flood(cluster, sidecars, target):  # type: ignore[no-untyped-def]
    addr = next(iter(sidecars.values()))
    held = []
    try:
        for _ in range(300):
            held.append(_connect(addr))
        _still_serves(cluster, sidecars, *target)
    finally:
        for s in held:
            s.close()
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
            assert c.stats()["fast"]["bytes"] > 0
