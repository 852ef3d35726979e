"""Native reads: READs of open files answered by the Rust loop, proved by the counters of
the loop, the mount's Python read path and the sidecar; what the loop cannot deliver
still reaches the Python operations (and HTTP), and the mount still ends cleanly."""

from __future__ import annotations

import mmap
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .conftest import FUSE_OK
from .mounts import fast_mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]


def _sidecar_bytes(sc) -> int:  # type: ignore[no-untyped-def]
    return int(httpx.get(f"{sc.http_url}/stats", timeout=10).json()["bytes"])


def _direct_reads(path: Path, size: int, block: int = 4096) -> bytes:
    """The file read in ``block``-sized O_DIRECT reads (the page cache serves none)."""
    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT wants
    out = bytearray()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        while len(out) < size:
            n = os.preadv(fd, [buf], len(out))
            if n == 0:
                break
            out += buf[:n]
    finally:
        os.close(fd)
    return bytes(out)


def test_native_reads_carry_the_bytes_and_decline_what_needs_python(
        cluster, shapes, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    m = fast_mount(cluster, tmp_path, sc)
    multi = shapes["multi_chunk"]
    try:
        before = _sidecar_bytes(sc)
        assert (m.mnt / multi.path.lstrip("/")).read_bytes() == multi.data
        state = m.state()
        carried = _sidecar_bytes(sc) - before
        # Every shape of this filer, buffered and O_DIRECT.
        for s in shapes.values():
            if s.filer != cluster.filer.grpc_address:
                continue
            path = m.mnt / s.path.lstrip("/")
            assert path.read_bytes() == s.data, s.note
            assert _direct_reads(path, len(s.data)) == s.data, s.note
        after = m.state()
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        sc.kill()
    loop, client = state["native_reads"], state["client"]
    # The whole file came through the loop, none through the Python read path or HTTP...
    assert loop["bytes"] == len(multi.data) and loop["reads"] > 0, loop
    assert client["fast"]["bytes"] == 0 and client["http"]["bytes"] == 0, client
    # ...and the sidecar sent at least those bytes.
    assert carried >= len(multi.data), (carried, loop)
    loop = after["native_reads"]
    # Compressed chunks are decoded in Python: those READs were declined, and answered.
    assert loop["declined"] > 0, loop
    assert loop["failed"] == 0 and loop["errors"] == 0, loop
    assert loop["registered"] == 0, "every handle was released"


def test_reads_the_sidecar_cannot_serve_reach_http(cluster, shapes, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    m = fast_mount(cluster, tmp_path, sc)
    multi = shapes["multi_chunk"]
    path = m.mnt / multi.path.lstrip("/")
    try:
        assert _direct_reads(path, 1 << 20, 1 << 20) == multi.data[:1 << 20]
        sc.kill()
        assert _direct_reads(path, len(multi.data), 256 << 10) == multi.data
        state = m.state()
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
    loop, client = state["native_reads"], state["client"]
    assert loop["reads"] > 0 and loop["failed"] > 0, loop
    # Those 256 KiB READs reached Python as 64 KiB pieces, and came back whole and right.
    assert loop["split"] > 0 and loop["errors"] == 0, loop
    assert client["http"]["bytes"] > 0, client


def test_a_file_written_here_is_read_with_its_written_bytes(cluster, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    data = os.urandom(3 << 20)
    cluster.upload("/native/w.bin", data, max_mb=1)
    m = fast_mount(cluster, tmp_path, sc)
    path = m.mnt / "native" / "w.bin"
    try:
        reader = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(reader, 4096, 0) == data[:4096]
            assert m.state()["native_reads"]["registered"] == 1
            writer = os.open(path, os.O_RDWR)
            try:
                os.pwrite(writer, b"X" * 5000, 100)
                os.posix_fadvise(reader, 0, 0, os.POSIX_FADV_DONTNEED)
                want = data[:100] + b"X" * 5000 + data[5100:8192]
                assert os.pread(reader, 8192, 0) == want
                assert m.state()["native_reads"]["registered"] == 0
            finally:
                os.close(writer)
        finally:
            os.close(reader)
        expected = data[:100] + b"X" * 5000 + data[5100:]
        assert path.read_bytes() == expected
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        sc.kill()


def test_an_unmount_from_outside_ends_the_mount(cluster, shapes, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    m = fast_mount(cluster, tmp_path, sc)
    multi = shapes["multi_chunk"]
    try:
        assert (m.mnt / multi.path.lstrip("/")).read_bytes() == multi.data
        subprocess.run(["fusermount3", "-u", str(m.mnt)], check=True)
        deadline = time.monotonic() + 20
        while m.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m.proc.returncode == 0, m.log.read_text()[-3000:]
        assert "unmounted" in m.log.read_text()
        assert not os.path.ismount(m.mnt)
    finally:
        m.stop()
        sc.kill()


def test_a_handle_open_while_the_file_changes_elsewhere_reads_the_new_version(
        cluster, tmp_path):  # type: ignore[no-untyped-def]
    sc = cluster.add_sidecar(cluster.volume_servers)
    first = os.urandom(300_000)
    cluster.upload("/native/grows.bin", first, max_mb=1)
    m = fast_mount(cluster, tmp_path, sc)
    try:
        fd = os.open(m.mnt / "native" / "grows.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, len(first), 0) == first
            more = os.urandom(200_000)
            r = httpx.post(f"{cluster.filer.url}/native/grows.bin", params={"op": "append"},
                           files={"file": ("grows.bin", more)}, timeout=60)
            assert r.status_code < 300, r.text
            # The filer pushes the change; the handle gets the new chunk list (and the
            # native loop with it), and the kernel drops what it cached.
            deadline = time.monotonic() + 20
            got = b""
            while time.monotonic() < deadline:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                got = os.pread(fd, len(first) + len(more), 0)
                if got == first + more:
                    break
                time.sleep(0.2)
            assert got == first + more, (len(got), len(first) + len(more))
            state = m.state()["native_reads"]
            assert state["registered"] == 1, state
        finally:
            os.close(fd)
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
        sc.kill()
