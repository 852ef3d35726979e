"""A ``seaweed-rdma mount`` run as a subprocess for tests, always unmounted at the end; our
mount beside a ``weed mount`` of the same filer; a mount's state and fast-path counters;
waiting for a condition."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seaweed_rdma.cluster import LocalCluster


class Mount:
    """A ``seaweed-rdma mount`` subprocess, always unmounted at the end."""

    def __init__(self, args: list[str], mnt: Path, log: Path, timeout: float = 30.0) -> None:
        self.mnt = mnt
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "seaweed_rdma.cli", "mount", *args, f"-dir={mnt}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mount did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # A mount killed above leaves its mount point dead (ENOTCONN), which ismount()
        # does not report: unmount whatever the kernel still lists there.
        with open("/proc/self/mounts") as mounts:
            listed = any(line.split()[1] == str(self.mnt) for line in mounts)
        if listed or os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        return self.proc.returncode

    def state(self) -> dict[str, Any]:
        """The mount's own state (inodes, cache, client stats) from its root's xattr."""
        return dict(json.loads(os.getxattr(self.mnt, "user.seaweed_rdma.stats")))


def fast_mount(cluster: LocalCluster, where: Path, sidecar: Any, *extra: str) -> Mount:
    """Our mount of ``cluster``'s filer at ``where/mnt`` with the fast path through
    ``sidecar`` (so the native loop runs), held metadata living 1 s, and ``extra`` flags."""
    mnt = where / "mnt"
    mnt.mkdir(exist_ok=True)
    return Mount([f"-filer={cluster.filer.grpc_address}", "-cacheMetaTtlSec=1",
                  "-rdma.enabled", f"-rdma.sidecar={sidecar.address}", *extra],
                 mnt, where / "mount.log")


@contextlib.contextmanager
def beside_weed_mount(cluster: LocalCluster, where: Path, flags: list[str]
                      ) -> Iterator[tuple[Path, Path]]:
    """(our mount, weed mount) of the same filer root, both under ``where``."""
    from .conftest import weed_mount  # conftest's fixtures import this module

    (where / "ours").mkdir()
    ours = Mount([f"-filer={cluster.filer.grpc_address}", *flags], where / "ours",
                 where / "ours.log")
    try:
        with weed_mount(cluster.filer, where) as weed:
            yield ours.mnt, weed
    finally:
        assert ours.stop() == 0, ours.log.read_text()[-3000:]


@contextlib.contextmanager
def held_files_beside_weed_mount(cluster: LocalCluster, where: Path, files: dict[str, bytes]
                                 ) -> Iterator[tuple[Path, Path]]:
    """``files`` uploaded, a sidecar for the volume servers, and our mount (fast path, so
    the native loop runs) beside a ``weed mount``, once our mount's metadata stream is up."""
    for p, b in files.items():
        cluster.upload(p, b)
    sc = cluster.add_sidecar(cluster.volume_servers)
    time.sleep(2.5)  # past the stream's replay of the uploads (see test_mount_small_files)
    flags = ["-rdma.enabled", f"-rdma.sidecar={sc.address}"]
    with beside_weed_mount(cluster, where, flags) as (mnt, weed):
        until(lambda: mount_state(mnt)["writes"]["meta_stream_up"])
        yield mnt, weed


def fast_bytes(state: dict[str, Any]) -> int:
    """Bytes the mount read over the fast path: its native read loop's and Python's."""
    native = state["native_reads"] or {}
    return int(native.get("bytes", 0)) + int(state["client"]["fast"]["bytes"])


def fast_failures(state: dict[str, Any]) -> int:
    """Reads that left the fast path: the native loop's failed READs, Python's fallbacks."""
    native = state["native_reads"] or {}
    return int(native.get("failed", 0)) + int(state["client"]["fallbacks"])


def mount_state(mnt: Path) -> dict[str, Any]:
    """The mount's state (its root's ``user.seaweed_rdma.stats`` xattr)."""
    return dict(json.loads(os.getxattr(mnt, "user.seaweed_rdma.stats")))


def until(fn: Any, limit: float = 15.0) -> None:
    """Waits until ``fn()`` is true, failing the test after ``limit`` seconds."""
    t0 = time.monotonic()
    while not fn():
        assert time.monotonic() - t0 < limit, "never happened"
        time.sleep(0.02)
