"""The native loop's read-ahead on a real mount: a handle read in order is answered from
windows read ahead across its chunks (proved by the loop's read-ahead counters), with
the right bytes, within its memory caps, and nothing held once the handle is closed;
random reads start none; a handle whose file changes reads the new bytes, never a window
of the old version."""

from __future__ import annotations

import mmap
import os
import random
import time
from typing import Any

import pytest

from .conftest import FUSE_OK
from .mounts import Mount, fast_mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

MIB = 1 << 20


def _read_direct(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` in one O_DIRECT read (one READ of that size)."""
    buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
    n = os.preadv(fd, [buf], offset)
    return bytes(buf[:n])


def _in_order(fd: int, start: int, end: int, block: int = MIB) -> bytes:
    return b"".join(_read_direct(fd, at, min(block, end - at)) for at in range(start, end, block))


def _ahead(m: Mount) -> dict[str, Any]:
    ra = m.state()["native_read_ahead"]
    assert ra is not None, "native reads are on"
    return dict(ra)


def _until_released(m: Mount) -> dict[str, Any]:
    """The read-ahead counters once no handle is registered and no window is held."""
    deadline = time.monotonic() + 20
    while True:
        state = m.state()
        ra = state["native_read_ahead"]
        if (state["native_reads"]["registered"] == 0 and ra["held"] == 0 and ra["spare"] == 0) \
                or time.monotonic() > deadline:
            return dict(ra)
        time.sleep(0.1)


def test_an_in_order_reader_is_served_from_read_ahead_within_its_caps(
        cluster, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    data = random.Random(26).randbytes(26 * MIB + 12345)
    cluster.upload("/ra/seq.bin", data, max_mb=4)
    m = fast_mount(cluster, tmp_path, sc, "-rdma.readAheadMiB=8", "-rdma.readAheadTotalMiB=12")
    path = m.mnt / "ra" / "seq.bin"
    try:
        # Random 4 KiB reads start no read-ahead.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            rng = random.Random(1)
            for _ in range(50):
                at = rng.randrange(0, len(data) // 4096) * 4096
                assert _read_direct(fd, at, 4096) == data[at:at + 4096]
        finally:
            os.close(fd)
        assert _ahead(m)["windows"] == 0, _ahead(m)
        # Two handles in order at once: the second is held to what the loop's budget has left.
        fds = [os.open(path, os.O_RDONLY | os.O_DIRECT) for _ in range(2)]
        try:
            got = [bytearray(), bytearray()]
            for at in range(0, len(data), MIB):
                for i, fd in enumerate(fds):
                    got[i] += _read_direct(fd, at, MIB)
            assert got[0] == data and got[1] == data
            during = _ahead(m)
            loop = m.state()["native_reads"]
        finally:
            for fd in fds:
                os.close(fd)
        after = _until_released(m)
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        sc.kill()
    # Most READs were answered from windows, whose bytes came right (checked above).
    assert during["hits"] > len(data) // MIB, during
    assert during["hit_bytes"] <= loop["bytes"], (during, loop)
    assert during["failed"] == 0 and loop["failed"] == 0 and loop["errors"] == 0, loop
    # Within the caps: 12 MiB for the loop, so the second handle was refused some windows.
    assert during["most_held"] <= 12 * MIB, during
    assert during["capped"] > 0, during
    # Closing the handles freed every window and every spare buffer.
    assert after["held"] == 0 and after["spare"] == 0, after


def test_a_handle_whose_file_changes_never_reads_old_windows(cluster, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    rng = random.Random(7)
    old = rng.randbytes(16 * MIB)
    new = rng.randbytes(16 * MIB)
    cluster.upload("/ra/changes.bin", old, max_mb=4)
    m = fast_mount(cluster, tmp_path, sc, "-rdma.readAheadMiB=12")
    path = m.mnt / "ra" / "changes.bin"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            assert _in_order(fd, 0, 3 * MIB) == old[:3 * MIB]
            ra = _ahead(m)
            assert ra["windows"] > 0 and ra["held"] > 0, "windows read ahead of the handle"
            cluster.upload("/ra/changes.bin", new, max_mb=4)
            # The filer pushes the change and the handle gets the new chunk list; from then
            # on every byte it reads is new, even where old windows had been read ahead.
            deadline = time.monotonic() + 20
            while _read_direct(fd, 4 * MIB, MIB) != new[4 * MIB:5 * MIB]:
                assert time.monotonic() < deadline, "the handle never saw the new version"
                time.sleep(0.2)
            assert _in_order(fd, 3 * MIB, len(new)) == new[3 * MIB:]
            assert _in_order(fd, 0, len(new)) == new
        finally:
            os.close(fd)
        # A write through the mount: the reader's READs go to the Python side, which
        # knows the written bytes, and no window answers them.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            assert _in_order(fd, 0, 3 * MIB) == new[:3 * MIB]
            with open(path, "r+b") as w:
                w.seek(6 * MIB)
                w.write(b"W" * 5000)
            want = new[:6 * MIB] + b"W" * 5000 + new[6 * MIB + 5000:]
            assert _in_order(fd, 3 * MIB, len(want)) == want[3 * MIB:]
        finally:
            os.close(fd)
        after = _until_released(m)
        assert after["failed"] == 0, after
        assert after["held"] == 0, after
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        sc.kill()
