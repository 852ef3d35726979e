"""The mount under cache pressure and under many distinct names: every byte compared while
many readers share a cache far smaller than what they read, and the inode table shrinking
back once the kernel forgets what it looked up."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from .conftest import FUSE_OK
from .mounts import Mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse, pytest.mark.slow,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

FILES = 4
FILE_BYTES = 12 << 20
NAMES = 400


@pytest.fixture(scope="module")
def pressure_files(cluster, sidecars):  # type: ignore[no-untyped-def]
    rng = random.Random(2026)
    files = {}
    for i in range(FILES):
        data = rng.randbytes(FILE_BYTES)
        path = f"/pressure/f{i}.bin"
        cluster.upload(path, data, max_mb=4)
        files[path] = data
    return files


@pytest.mark.parametrize(("cache_mb", "native"), [(0, False), (16, False), (0, True)])
def test_many_readers_against_a_small_cache(cluster, sidecars, pressure_files, cache_mb,
                                            native, tmp_path):  # type: ignore[no-untyped-def]
    """With native reads off, every READ goes through the mount's block cache, which is
    what is under pressure; with them on, through the Rust loop's threads."""
    all_sidecar = cluster.add_sidecar(cluster.volume_servers)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount([f"-filer={cluster.filer.grpc_address}", "-rdma.enabled",
               f"-rdma.sidecar={all_sidecar.address}", f"-cacheCapacityMB={cache_mb}",
               f"-rdma.nativeReads={str(native).lower()}"],
              mnt, tmp_path / "mount.log")
    wrong: list[str] = []
    reads = [0]
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            path = rng.choice(sorted(pressure_files))
            data = pressure_files[path]
            size = rng.randint(1, 3 << 20)
            off = rng.randrange(0, len(data))
            fd = os.open(m.mnt / path.lstrip("/"), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                got = os.pread(fd, size, off)
            finally:
                os.close(fd)
            with lock:
                reads[0] += 1
                if got != data[off:off + size]:
                    wrong.append(f"{path} at {off}+{size}: {len(got)} bytes, wrong content")

    try:
        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        state = m.state()
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        all_sidecar.kill()
    assert reads[0] == 8 * 60
    assert not wrong, f"{len(wrong)} of {reads[0]} reads returned wrong bytes: {wrong[:5]}"
    client, loop = state["client"], state["native_reads"]
    if native:
        assert loop["reads"] > 0 and loop["bytes"] > 0, loop
        assert loop["failed"] == 0 and loop["errors"] == 0, loop
        assert client["http"]["bytes"] == 0, client
    else:
        assert loop is None
        assert client["fast"]["bytes"] > 0, "the fast path carried nothing"
    assert state["cache_bytes"] <= max(cache_mb << 20, 4 << 20)


def test_forgotten_names_leave_the_inode_table(cluster, sidecars, tmp_path):  # type: ignore[no-untyped-def]
    for i in range(NAMES):
        cluster.upload(f"/names/n{i:04d}", b"x%d" % i)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount([f"-filer={cluster.filer.grpc_address}", "-cacheMetaTtlSec=60"], mnt,
              tmp_path / "mount.log")
    try:
        for i in range(NAMES):
            assert os.stat(mnt / "names" / f"n{i:04d}").st_size == len(b"x%d" % i)
        assert m.state()["inodes"] >= NAMES + 1
        # Let the kernel evict its dentries and inodes: each eviction is a FORGET.
        deadline = time.monotonic() + 30
        while m.state()["inodes"] > 10 and time.monotonic() < deadline:
            Path("/proc/sys/vm/drop_caches").write_text("2\n")
            time.sleep(0.5)
        inodes = m.state()["inodes"]
        assert inodes <= 10, f"{inodes} inodes still known after the kernel forgot them"
        # A forgotten name is looked up again and reads the same.
        assert (mnt / "names" / "n0007").read_bytes() == b"x7"
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]


def test_verified_mount_reads_whole_checked_chunks(cluster, sidecars, pressure_files,
                                                   tmp_path):  # type: ignore[no-untyped-def]
    all_sidecar = cluster.add_sidecar(cluster.volume_servers)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount([f"-filer={cluster.filer.grpc_address}", "-rdma.enabled", "-rdma.verify",
               f"-rdma.sidecar={all_sidecar.address}"], mnt, tmp_path / "mount.log")
    try:
        path, data = sorted(pressure_files.items())[0]
        with open(mnt / path.lstrip("/"), "rb") as f:
            assert f.read() == data
            f.seek(5_000_123)
            assert f.read(4096) == data[5_000_123:5_004_219]
        engine = m.state()["client"]["engine"]
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        all_sidecar.kill()
    assert engine["whole_reads"] >= len(data) // (4 << 20), engine
