"""What the worker-process tests share (over tcp on the host, over verbs in the guest): many
small files with their digests, and worker functions a ``multiprocessing`` pool runs.

The functions live in a module of their own so that ``spawn`` and ``forkserver`` children
can import them by name."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

FILE_SIZE = 64 * 1024

# The client a forked worker inherits, as DataLoader workers inherit the dataset's.
INHERITED: Client | None = None


def make_files(cluster: LocalCluster, prefix: str, n: int, seed: int = 22) -> dict[str, str]:
    """``n`` distinct files of 64 KiB under ``prefix``: {path: md5}."""
    rng = random.Random(seed)
    blobs = {f"{prefix}/f{i:05d}.bin": rng.randbytes(FILE_SIZE) for i in range(n)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: cluster.upload(item[0], item[1]), blobs.items()))
    return {p: hashlib.md5(b).hexdigest() for p, b in blobs.items()}


@dataclass
class WorkerReport:
    """What one worker process saw."""

    pid: int
    files: int
    wrong: list[str]
    fast_bytes: int
    http_bytes: int
    by_transport: dict[str, int]  # the engine's fast-path bytes: {"tcp": n, "verbs": n}


def _check(client: Client, digests: dict[str, str]) -> WorkerReport:
    wrong = [p for p, want in digests.items()
             if hashlib.md5(client.read(p)).hexdigest() != want]
    st = client.stats()
    assert st["pid"] == os.getpid(), "stats are this process's own"
    by_transport = dict(st.get("engine", {}).get("bytes_by_transport", {}))
    return WorkerReport(os.getpid(), len(digests), wrong, st["fast"]["bytes"],
                        st["http"]["bytes"], by_transport)


def read_inherited(digests: dict[str, str]) -> WorkerReport:
    """A forked worker: reads with the client its parent made and used."""
    assert INHERITED is not None
    return _check(INHERITED, digests)


def read_with(args: tuple[Client, dict[str, str]]) -> WorkerReport:
    """A spawned worker: reads with the client it was sent (pickled)."""
    client, digests = args
    with client:
        return _check(client, digests)


def read_fsspec(args: tuple[Any, dict[str, str]]) -> list[str]:
    """A spawned worker: reads through the fsspec filesystem it was sent; the wrong files."""
    fs, digests = args
    return [p for p, want in digests.items()
            if hashlib.md5(fs.cat_file(p)).hexdigest() != want]


def forked_rounds(client: Client, digests: dict[str, str], rounds: int, workers: int = 4,
                  parent_reads: bool = True) -> list[list[WorkerReport]]:
    """``rounds`` times: forks ``workers`` processes that each read their share of
    ``digests`` with ``client`` (already used here), while this process keeps reading with
    it from a thread. Returns each round's reports; raises if the parent read wrong."""
    global INHERITED
    INHERITED = client
    paths = sorted(digests)
    errors: list[str] = []
    stop = threading.Event()

    def parent() -> None:
        rng = random.Random(5)
        while not stop.is_set():
            p = rng.choice(paths)
            if hashlib.md5(client.read(p)).hexdigest() != digests[p]:
                errors.append(p)

    reader = threading.Thread(target=parent) if parent_reads else None
    if reader is not None:
        reader.start()
    out = []
    try:
        ctx = multiprocessing.get_context("fork")
        for _ in range(rounds):
            shares = [{p: digests[p] for p in paths[i::workers]} for i in range(workers)]
            with ctx.Pool(workers) as pool:
                out.append(pool.map(read_inherited, shares))
    finally:
        stop.set()
        if reader is not None:
            reader.join(60)
        INHERITED = None
    assert not errors, f"the parent read {len(errors)} files wrong while its workers ran"
    return out


def assert_all_right(rounds: list[list[WorkerReport]], transport_bytes: Callable[[], int],
                     before: int) -> None:
    """Every file right in every worker, each worker's bytes over the fast path (none over
    HTTP), and the sidecars counting at least as many bytes as the workers read."""
    total = 0
    for reports in rounds:
        assert len({r.pid for r in reports}) == len(reports)
        for r in reports:
            assert r.wrong == [], f"worker {r.pid}: {len(r.wrong)} of {r.files} files wrong"
            assert r.fast_bytes >= r.files * FILE_SIZE, r
            assert r.http_bytes == 0, r
            total += r.files * FILE_SIZE
    assert transport_bytes() - before >= total


def dataset_batch(args: tuple[Any, list[int]]) -> list[Any]:
    """A worker's batch from a dataset it was sent (pickled) or inherited (forked)."""
    ds, indices = args
    return list(ds.__getitems__(indices))


def iterate(ds: Any) -> list[Any]:
    """Everything a dataset yields, in a worker process."""
    return list(ds)
