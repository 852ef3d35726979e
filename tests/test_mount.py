"""The FUSE mount against the real cluster: a real mount, compared byte for byte."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import FUSE_OK, Shape
from .mounts import Mount, fast_bytes, fast_failures

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

TTL = 1.0


def _mount(cluster, tmp_path: Path, *extra: str) -> Mount:  # type: ignore[no-untyped-def]
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    return Mount([f"-filer={cluster.filer.grpc_address}", f"-cacheMetaTtlSec={TTL}", *extra],
                 mnt, tmp_path / "mount.log")


@pytest.fixture(scope="module")
def all_sidecar(cluster, sidecars):  # type: ignore[no-untyped-def]
    """One sidecar for every volume server ("HOST:PORT" form of -rdma.sidecar)."""
    return cluster.add_sidecar(cluster.volume_servers)


@pytest.fixture(scope="module")
def fast_mount(cluster, shapes, all_sidecar, tmp_path_factory):  # type: ignore[no-untyped-def]
    m = _mount(cluster, tmp_path_factory.mktemp("fastmount"), "-rdma.enabled",
               f"-rdma.sidecar={all_sidecar.address}", "-concurrentReaders=16")
    yield m
    assert m.stop() == 0, m.log.read_text()[-3000:]
    assert not os.path.ismount(m.mnt)


def _local(m: Mount, s: Shape) -> Path:
    return m.mnt / s.path.lstrip("/")


def _served(state: dict[str, Any]) -> int:
    """What the mount has answered reads with: fast path, HTTP and its block cache."""
    return (fast_bytes(state) + int(state["client"]["http"]["bytes"])
            + int(state["cache_hits"]))


def _main_filer_shapes(shapes, cluster):  # type: ignore[no-untyped-def]
    return [s for s in shapes.values() if s.filer == cluster.filer.grpc_address]


def test_listdir_and_stat_agree_with_filer(fast_mount, shapes, cluster):  # type: ignore[no-untyped-def]
    from seaweed_rdma import Client

    with Client(cluster.filer.grpc_address) as c:
        assert sorted(os.listdir(fast_mount.mnt / "shapes")) == sorted(c.listdir("/shapes"))
        for s in _main_filer_shapes(shapes, cluster):
            st = os.stat(_local(fast_mount, s))
            info = c.stat(s.path)
            assert st.st_size == len(s.data) == info["size"]
            assert st.st_mode == info["mode"]
            assert st.st_mtime_ns == info["mtime_ns"]
    inode = os.stat(fast_mount.mnt / "shapes" / "multi.bin").st_ino
    assert os.stat(fast_mount.mnt / "shapes" / "multi.bin").st_ino == inode


def test_every_shape_reads_byte_exact(fast_mount, shapes, cluster):  # type: ignore[no-untyped-def]
    for s in _main_filer_shapes(shapes, cluster):
        path = _local(fast_mount, s)
        assert path.read_bytes() == s.data, s.note
        fd = os.open(path, os.O_RDONLY)
        try:
            rng = random.Random(s.note)
            for _ in range(20):
                off = rng.randrange(0, len(s.data) + 3)
                size = rng.choice([1, 4096, 70_000, 1 << 20])
                assert os.pread(fd, size, off) == s.data[off:off + size], (s.note, off, size)
        finally:
            os.close(fd)


def test_concurrent_readers(fast_mount, shapes):  # type: ignore[no-untyped-def]
    picks = [shapes[k] for k in ("multi_chunk", "compressed_text", "appended", "collection")]
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(30):
            s = rng.choice(picks)
            with open(_local(fast_mount, s), "rb") as f:
                off = rng.randrange(0, len(s.data))
                f.seek(off)
                got = f.read(rng.choice([4096, 500_000]))
                if got != s.data[off:off + len(got)] or not got:
                    errors.append(f"{s.note} at {off}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]


def test_symlink_from_weed_mount(fast_mount, shapes):  # type: ignore[no-untyped-def]
    if "overlapping" not in shapes:
        pytest.skip("symlink is made through weed mount")
    link = fast_mount.mnt / "shapes" / "link-to-multi"
    assert os.readlink(link) == "multi.bin"
    assert link.read_bytes() == shapes["multi_chunk"].data


def test_writes_get_erofs_with_read_only(cluster, shapes, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster, tmp_path, "-readOnly")
    target = m.mnt / "shapes"
    try:
        _all_refused(target)
    finally:
        assert m.stop() == 0


def _all_refused(target: Path) -> None:
    for attempt in (
        lambda: os.open(target / "new.bin", os.O_WRONLY | os.O_CREAT),
        lambda: os.open(target / "multi.bin", os.O_RDWR),
        lambda: os.mkdir(target / "newdir"),
        lambda: os.unlink(target / "multi.bin"),
        lambda: os.rename(target / "multi.bin", target / "x.bin"),
    ):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS


def test_replaced_file_shows_after_ttl(fast_mount, cluster):  # type: ignore[no-untyped-def]
    cluster.upload("/mnt/replace.bin", b"old content " * 1000)
    path = fast_mount.mnt / "mnt" / "replace.bin"
    assert path.read_bytes() == b"old content " * 1000
    cluster.upload("/mnt/replace.bin", b"NEW!" * 5000)
    deadline = time.monotonic() + TTL * 5 + 5
    while time.monotonic() < deadline:
        if path.read_bytes() == b"NEW!" * 5000:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the new content never showed through the mount")


def test_missing_path_and_xattrs(fast_mount):  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        os.stat(fast_mount.mnt / "no" / "such")
    with pytest.raises(OSError) as e:
        os.getxattr(fast_mount.mnt / "shapes" / "multi.bin", "user.nothing")
    assert e.value.errno == errno.ENODATA
    assert os.listxattr(fast_mount.mnt / "shapes" / "multi.bin") == []
    st = os.statvfs(fast_mount.mnt)
    assert st.f_namemax == 255


def test_sidecar_killed_during_cat(cluster, shapes, tmp_path):  # type: ignore[no-untyped-def]
    """The sidecar dies in the middle of a file being read through the mount: the read
    under way and every cat after it get the right bytes, over HTTP from the kill on.

    Proven, not left to timing: the head of the file came over the fast path (and nothing
    over HTTP) before the kill; the sidecar has exited before the rest is read; the rest
    came over HTTP with fallbacks counted; and cats after the kill reach the mount (HTTP
    bytes grow with each)."""
    sc = cluster.add_sidecar(cluster.volume_servers)
    m = _mount(cluster, tmp_path, "-rdma.enabled", f"-rdma.sidecar={sc.address}",
               "-rdma.timeoutMs=1000")
    try:
        s = shapes["multi_chunk"]  # 5 MiB + 4321 bytes in 1 MiB chunks
        Path("/proc/sys/vm/drop_caches").write_text("3")
        with open(_local(m, s), "rb", buffering=0) as f:
            # No kernel readahead, so the rest is asked for only after the kill.
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            head = f.read(256 << 10)
            before = m.state()
            assert fast_bytes(before) >= len(head), before
            assert before["client"]["http"]["bytes"] == 0, before
            assert fast_failures(before) == 0, before
            sc.sigkill()
            assert sc.proc.poll() is not None
            rest = f.read()
        assert head + rest == s.data
        after = m.state()
        # Everything after the head, at least, came over HTTP, each piece after a failure.
        assert after["client"]["http"]["bytes"] >= len(rest) and fast_failures(after) > 0, after
        served = _served(after)
        for _ in range(3):
            # Each cat must reach the mount, not the page cache.
            Path("/proc/sys/vm/drop_caches").write_text("3")
            out = subprocess.run(["cat", str(_local(m, s))], capture_output=True, timeout=60)
            assert out.returncode == 0 and out.stdout == s.data
            state = m.state()
            assert _served(state) > served, ("the cat did not reach the mount", state)
            served = _served(state)
    finally:
        assert m.stop() == 0
        sc.kill()


def test_weed_mount_command_line_and_unknown_flags(cluster, shapes, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster, tmp_path, "-filer.path=/shapes", "-chunkSizeLimitMB=4",
               "-cacheCapacityMB=0", "--readOnly", "-concurrentReaders=4", "-cacheDir=/tmp")
    try:
        assert "multi.bin" in os.listdir(m.mnt)
    finally:
        assert m.stop() == 0
    text = m.log.read_text()
    assert "cacheDir is accepted but not implemented" in text
    assert "READ-ONLY" in text


def test_clean_unmount_on_sigint_and_no_leftovers(cluster, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster, tmp_path)
    m.proc.send_signal(signal.SIGINT)
    assert m.proc.wait(15) == 0
    assert not os.path.ismount(m.mnt)
    out = subprocess.run(["pgrep", "-f", f"mount.*{m.mnt}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_stale_mount_is_detected(cluster, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster, tmp_path, "-autoUnmount=false")
    m.proc.kill()
    m.proc.wait(10)
    try:
        with pytest.raises(OSError) as e:
            os.listdir(m.mnt)
        assert e.value.errno == errno.ENOTCONN
        out = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "mount",
                              f"-filer={cluster.filer.grpc_address}", f"-dir={m.mnt}"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert "stale" in out.stdout and "fusermount3 -u" in out.stdout
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], check=False)


def test_auto_unmount_after_crash(cluster, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster, tmp_path)
    m.proc.kill()
    m.proc.wait(10)
    deadline = time.monotonic() + 10
    while os.path.ismount(m.mnt) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.ismount(m.mnt), "auto_unmount should have cleared the mount"
