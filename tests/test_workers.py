"""A Client in worker processes: forked after use (DataLoader's default), pickled for spawn
and forkserver, forked while a read is in flight, forked twice. Real cluster, tcp."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import threading
import time

import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

from .workers import (
    assert_all_right,
    forked_rounds,
    make_files,
    read_fsspec,
    read_with,
)

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def files(cluster: LocalCluster) -> dict[str, str]:
    return make_files(cluster, "/workers", 600)


def served(cluster: LocalCluster, sidecars: dict[str, str]) -> int:
    """Bytes the sidecars of the ``sidecars`` mapping say they delivered (other tests may
    have left sidecars of their own, stopped, in the cluster's list)."""
    mine = set(sidecars.values())
    return sum(int(sc.stats()["bytes"]) for sc in cluster.sidecars  # type: ignore[call-overload]
               if sc.address in mine)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_a_used_client_reads_right_in_forked_workers(cluster, sidecars, files):  # type: ignore[no-untyped-def]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        first = sorted(files)[0]
        assert hashlib.md5(c.read(first)).hexdigest() == files[first]
        before = served(cluster, sidecars)
        rounds = forked_rounds(c, files, rounds=3)
        assert_all_right(rounds, lambda: served(cluster, sidecars), before)
        # The parent's own connections were never touched by its children.
        st = c.stats()
        assert st["pid"] == os.getpid() and st["http"]["bytes"] == 0
        assert st["engine"]["failures_by_reason"].get("crossed", 0) == 0


def _wait(pid: int, limit: float) -> int:
    """The exit status of ``pid``; kills it and fails if it is not done in ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} hung (killed after {limit} s)")


def _child_reads(c: Client, files: dict[str, str], paths: list[str], depth: int) -> int:
    """In a forked child: the files read right (0) or not (1); forks again first while
    ``depth`` > 0 and fails if the grandchild did."""
    if depth > 0:
        pid = os.fork()
        if pid == 0:
            os._exit(_child_reads(c, files, paths, depth - 1))
        if _wait(pid, 60) != 0:
            return 1
    for p in paths:
        if hashlib.md5(c.read(p)).hexdigest() != files[p]:
            os.write(2, f"child {os.getpid()}: wrong bytes for {p}\n".encode())
            return 1
    st = c.stats()
    if st["http"]["bytes"]:
        # Right bytes either way; a fallback (a batch past its deadline on a loaded host)
        # is said, not failed. That the child used a fast path of its own is required.
        os.write(2, f"child {os.getpid()}: fell back: {st['fallback_reasons']}\n".encode())
    if st["fast"]["bytes"] > 0:
        return 0
    os.write(2, f"child {os.getpid()}: no fast-path bytes: {st}\n".encode())
    return 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_fork_while_reads_are_in_flight_and_a_fork_of_a_fork(cluster, sidecars, files):  # type: ignore[no-untyped-def]
    paths = sorted(files)
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        errors: list[str] = []
        stop = threading.Event()

        reads = [0, 0, 0]

        def busy(seed: int) -> None:
            i = seed
            while not stop.is_set():
                p = paths[i % len(paths)]
                try:
                    if hashlib.md5(c.read(p)).hexdigest() != files[p]:
                        errors.append(p)
                except Exception as e:  # a failure is the test's, not a dead thread's
                    errors.append(repr(e))
                reads[seed] += 1
                i += 7

        threads = [threading.Thread(target=busy, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        try:
            for n in range(12):
                share = paths[n * 40:(n + 1) * 40]
                # The parent's threads are reading at the moment of each fork.
                seen = sum(reads)
                deadline = time.monotonic() + 30
                while sum(reads) < seen + 3:
                    assert time.monotonic() < deadline, "the parent's readers stopped"
                    time.sleep(0.001)
                pid = os.fork()
                if pid == 0:
                    # A parent thread was inside a read at this moment (locks held,
                    # requests in flight on its connections): the child must neither
                    # hang nor read the parent's answers; every third forks again.
                    os._exit(_child_reads(c, files, share, depth=1 if n % 3 == 0 else 0))
                assert _wait(pid, 60) == 0, f"fork {n}: the child read wrong (its stderr says)"
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert errors == []
        st = c.stats()
        assert all(n > 0 for n in reads), reads
        assert st["fast"]["bytes"] > 0 and st["http"]["bytes"] == 0, st
        assert st["engine"]["failures_by_reason"].get("crossed", 0) == 0


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_pickled_client_reads_in_spawned_workers(cluster, sidecars, files, method):  # type: ignore[no-untyped-def]
    paths = sorted(files)[:160]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp",
                fast_timeout=7.5) as c:
        c.read(paths[0])
        copy = pickle.loads(pickle.dumps(c))
        assert copy.config == c.config and copy.config.fast_timeout == 7.5
        copy.close()
        before = served(cluster, sidecars)
        ctx = multiprocessing.get_context(method)
        shares = [(c, {p: files[p] for p in paths[i::2]}) for i in range(2)]
        with ctx.Pool(2) as pool:
            reports = pool.map(read_with, shares)
        assert_all_right([reports], lambda: served(cluster, sidecars), before)
        assert all(r.pid != os.getpid() for r in reports)


def test_the_fsspec_filesystem_pickles_for_spawned_workers(cluster, sidecars, files):  # type: ignore[no-untyped-def]
    fsspec = pytest.importorskip("fsspec")
    paths = sorted(files)[:40]
    fs = fsspec.filesystem("seaweedfs", filer=cluster.filer.grpc_address, sidecar=sidecars,
                           transport="tcp", skip_instance_cache=True)
    assert fs.cat_file(paths[0]) is not None
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        wrong = pool.map(read_fsspec, [(fs, {p: files[p] for p in paths[i::2]})
                                       for i in range(2)])
    assert wrong == [[], []]


def test_what_cannot_cross_a_process_says_what_to_pass(cluster, files):  # type: ignore[no-untyped-def]
    path = sorted(files)[0]
    with Client(cluster.filer.grpc_address) as c:
        with c.open(path) as f, pytest.raises(TypeError, match="pass the Client"):
            pickle.dumps(f)
        with pytest.raises(TypeError, match="pass the Client"):
            pickle.dumps(c.view(path))
