"""Lifecycle of the client and the engine: close() releases threads, descriptors and sidecar
connections; a dropped ticket never blocks its thread; every Rust error has its own Python
class with an errno; fallback counters are keyed by stable reasons."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from pathlib import Path

import pytest

from seaweed_rdma import Client, _core
from seaweed_rdma._core import Engine, RangeOp, Volume
from seaweed_rdma.errors import ClientClosed, SeaweedRdmaError

REASONS = {"down", "connect", "lost", "timeout", "short", "compressed", "protocol", "bad_op",
           "verbs", "not_found", "deleted", "unauthorized", "busy", "internal", "bad_request",
           "no_sidecar", "crc_mismatch"}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sidecar_conns(sidecar_addr: str) -> int:
    """Established TCP connections from this process to ``sidecar_addr``."""
    port = int(sidecar_addr.rsplit(":", 1)[1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == "01" and int(remote.split(":")[1], 16) == port:
            count += 1
    return count  # the sidecar ends have the port as local, not remote, port


@pytest.mark.cluster
def test_close_releases_threads_fds_and_connections(cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as warm:
        assert warm.read(s.path) == s.data  # imports, first connections, caches
    threads0, fds0 = threading.active_count(), _fds()
    conns0 = sum(_sidecar_conns(a) for a in set(sidecars.values()))
    kept = []
    for _ in range(20):
        c = Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp")
        assert c.read(s.path, 1000, 300_000) == s.data[1000:301_000]
        assert c.stats()["fast"]["bytes"] > 0
        c.close()
        kept.append(c)  # kept alive: close() alone must free everything
    assert threading.active_count() <= threads0 + 1, threading.enumerate()
    assert _fds() <= fds0 + 2
    assert sum(_sidecar_conns(a) for a in set(sidecars.values())) <= conns0
    with pytest.raises(ClientClosed):
        kept[0].read(s.path)
    assert kept[0].closed and kept[0].stats()["engine"]["closed"]
    kept[0].close()  # idempotent


def test_dropped_ticket_does_not_wait_for_its_batch() -> None:
    """A listener that accepts and never answers holds the batch until its deadline; the
    ticket dropped meanwhile must come back at once, with the batch still running.

    Proven, not assumed: the listener has the engine's hello before the drop (the batch
    is on the wire), and after the drop that connection is still open and no failure is
    counted (a drop that had waited for the batch would have seen it fail or close)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    host, port = silent.getsockname()
    addr = f"{host}:{port}"
    engine = Engine(timeout_ms=30_000, connect_timeout_ms=20_000, transport="tcp")
    conn: socket.socket | None = None
    try:
        buf = bytearray(4096)
        ticket = engine.submit_read_into(buf, [RangeOp(addr, 1, 2, 3, 0, 4096, 0)])
        silent.settimeout(10)
        conn = silent.accept()[0]
        conn.settimeout(10)
        hello = conn.recv(4)
        assert hello == b"SWRD", hello  # the batch's connection, in its handshake
        conn.settimeout(0.3)
        with contextlib.suppress(TimeoutError):
            while conn.recv(4096):  # the rest of the hello; then it waits for an answer
                pass
        assert engine.stats()["batches"] == 1
        del ticket
        # Still in its handshake: the connection is open, nothing has failed.
        conn.settimeout(0.5)
        with pytest.raises(TimeoutError):
            rest = conn.recv(4096)
            assert rest, "the engine closed the batch's connection: the drop waited for it"
        assert engine.stats()["failures_by_reason"] == {}
        assert engine.stats()["slot_waits"] == 0  # a verbs-only counter, here and zero
    finally:
        engine.close(timeout_s=0.1)
        if conn is not None:
            conn.close()
        silent.close()


def test_every_rust_error_has_its_own_class_and_errno() -> None:
    samples = _core._error_samples()
    assert len(samples) >= 17
    for reason, err in samples:
        assert isinstance(err, SeaweedRdmaError), (reason, err)
        assert type(err) is not SeaweedRdmaError, f"{reason} maps to the base class"
        assert isinstance(err.errno, int) and err.errno > 0, (reason, err)
        assert err.reason == reason
    by_reason = {r: type(e).__name__ for r, e in samples}
    assert by_reason["not_found"] == "NeedleNotFound"
    ios = [e for r, e in samples if r == "io"]
    assert [e.errno for e in ios] == [errno.ENOENT, errno.EACCES, errno.EIO]
    assert isinstance(ios[0], FileNotFoundError) and isinstance(ios[1], PermissionError)


def test_missing_volume_file_is_file_not_found(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError) as e:
        Volume(str(tmp_path / "7.dat"))
    assert isinstance(e.value, SeaweedRdmaError)
    assert e.value.errno == errno.ENOENT


@pytest.mark.cluster
def test_fallback_counters_use_stable_reasons(cluster, shapes):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: every op fails to connect
    with Client(cluster.filer.grpc_address, sidecar=f"127.0.0.1:{port}", transport="tcp") as c:
        for off in range(0, len(s.data), 123_457):
            assert c.read(s.path, off, 777) == s.data[off:off + 777]
        st = c.stats()
    reasons = st["fallback_reasons"]
    assert reasons and set(reasons) <= REASONS, reasons
    assert sum(reasons.values()) == st["fallbacks"]


@pytest.mark.cluster
def test_client_sets_the_engines_limits(cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    """The connection cap and idle timeout reach the engine: with a cap of one connection,
    reads from every sidecar in turn leave at most one open, by evicting the idle one."""
    s = shapes["multi_chunk"]
    addrs = sorted(set(sidecars.values()))
    if len(addrs) < 2:
        pytest.skip("needs two sidecars")
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp",
                fast_max_conns=1, fast_idle_timeout=30, fast_pinned_budget=8 << 20) as c:
        for _ in range(2):
            for addr in addrs:
                c.reader.fast.engine.ping(addr)  # type: ignore[union-attr]
        eng = c.stats()["engine"]
        assert eng["open_conns"] <= 1 + eng["over_cap"] and eng["evicted"] >= 1, eng
        assert c.read(s.path) == s.data
