"""Small commits through the mount (issue 24, writes): a small file's close and a
database's fsync upload their few dirty ranges and write the entry in one worker-thread
call, on file ids asked for ahead and kept-alive connections. Every byte is compared
through a fresh ``weed mount`` and the Client; the mount's counters tell which path
carried each commit; a volume server that is down gives EIO and no entry naming
missing bytes."""

from __future__ import annotations

import errno
import os
import random
import time
from pathlib import Path

import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

from .conftest import FUSE_OK, weed_mount
from .mounts import Mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

KIB = 1 << 10


def _mount(filer: str, where: Path, *extra: str) -> Mount:
    mnt = where / "mnt"
    mnt.mkdir()
    return Mount([f"-filer={filer}", "-chunkSizeLimitMB=1", *extra], mnt, where / "mnt.log")


def _writes(m: Mount) -> dict[str, int]:
    return dict(m.state()["writes"])


def _write_pieces(path: Path, pieces: list[tuple[int, bytes]]) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for off, data in pieces:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _expected(pieces: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for off, data in pieces:
        if off > len(out):
            out.extend(bytes(off - len(out)))
        out[off:off + len(data)] = data
    return bytes(out)


def test_small_files_commit_in_one_call_and_read_back_everywhere(cluster, tmp_path):  # type: ignore[no-untyped-def]
    rng = random.Random(24)
    m = _mount(cluster.filer.grpc_address, tmp_path)
    try:
        d = m.mnt / "small-commits"
        d.mkdir()
        files: dict[str, list[tuple[int, bytes]]] = {
            "tiny": [(0, b"x")],
            "tar-like": [(0, rng.randbytes(9000))],
            "64k": [(0, rng.randbytes(64 * KIB))],
            "two-writes": [(0, rng.randbytes(4 * KIB)), (4 * KIB, rng.randbytes(4 * KIB))],
            # Ranges apart in one chunk and across two 1 MiB chunks (a hole between).
            "sparse": [(0, rng.randbytes(100)), (300 * KIB, rng.randbytes(5000))],
            "two-chunks": [((1 << 20) - 10, rng.randbytes(20)), (10, rng.randbytes(10))],
            # More ranges than a small commit takes: the usual commit writes it.
            "many-ranges": [(i * 8 * KIB, rng.randbytes(100)) for i in range(6)],
            "empty": [],
        }
        for i in range(30):  # a burst, as tar or a build writes them
            files[f"burst-{i}"] = [(0, rng.randbytes(rng.choice((100, 2000, 64 * KIB))))]
        before = _writes(m)
        in_one_call = {}
        for name, pieces in files.items():
            n = _writes(m)["small_commits"]
            _write_pieces(d / name, pieces)
            in_one_call[name] = _writes(m)["small_commits"] - n
        after = _writes(m)
        want = {name: _expected(pieces) for name, pieces in files.items()}
        for name, data in want.items():
            assert (d / name).read_bytes() == data, name
        # Every non-empty file but the one with six ranges was committed in one call, but
        # for at most one whose file id was still being asked for at its close (the first
        # file, or under load the first after the six-range file, which took its ids one
        # by one); the uploads went over a few kept-alive connections, not one each.
        assert in_one_call["many-ranges"] == 0 and in_one_call["empty"] == 0
        missed = [name for name, n in in_one_call.items()
                  if n != 1 and name not in ("many-ranges", "empty")]
        assert len(missed) <= 1 and all(in_one_call[n] == 0 for n in missed), in_one_call
        assert after["upload_failures"] == before["upload_failures"]
        uploads = after["uploads"] - before["uploads"]
        assert uploads >= len(files) + 2
        assert after["upload_connects"] - before["upload_connects"] < uploads // 4
        with weed_mount(cluster.filer, tmp_path) as wm:
            for name, data in want.items():
                assert (wm / "small-commits" / name).read_bytes() == data, name
        with Client(cluster.filer.grpc_address) as c:
            for name, data in want.items():
                assert c.read(f"/small-commits/{name}") == data, name
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]


def test_fsync_after_each_small_append_is_durable_at_once(cluster, tmp_path):  # type: ignore[no-untyped-def]
    """A WAL-like file: appends and an in-place rewrite, each followed by fsync; after
    every fsync the filer already has exactly the bytes written so far."""
    rng = random.Random(5)
    m = _mount(cluster.filer.grpc_address, tmp_path)
    try:
        path = m.mnt / "wal.bin"
        local = bytearray()
        before = _writes(m)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        with Client(cluster.filer.grpc_address) as c:
            try:
                for i in range(40):
                    if i % 10 == 9:  # a header rewrite, as sqlite does
                        data, off = rng.randbytes(32), 0
                    else:
                        data, off = rng.randbytes(rng.choice((24, 4096 + 24, 8300))), len(local)
                    os.pwrite(fd, data, off)
                    local[off:off + len(data)] = data
                    os.fsync(fd)
                    c.invalidate("/wal.bin")  # the filer's version now, not a cached one
                    assert c.read("/wal.bin") == bytes(local), i
                    assert os.pread(fd, len(local) + 10, 0) == bytes(local), i
            finally:
                os.close(fd)
        after = _writes(m)
        # The reads back were answered from the bytes the writer keeps, with no GET.
        assert after["clean_reads"] > before["clean_reads"]
        # Not all 40: the first may wait for its file id (none at hand for this
        # directory), and the filer drops a chunk that a rewrite covers wholly, so the
        # commit after such a rewrite is refused once and made the usual way on the
        # version re-read (as before this path).
        assert after["small_commits"] - before["small_commits"] >= 35
        with weed_mount(cluster.filer, tmp_path) as wm:
            assert (wm / "wal.bin").read_bytes() == bytes(local)
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]


def test_small_file_close_with_volume_server_down_is_eio_and_writes_no_entry(tmp_path):  # type: ignore[no-untyped-def]
    with LocalCluster(volumes=1) as c:
        m = _mount(c.filer.grpc_address, tmp_path)
        try:
            for i in range(3):  # the first may wait for its file id; the others may not
                (m.mnt / f"ok{i}.bin").write_bytes(b"stored")
            small = _writes(m)["small_commits"]
            assert small >= 2
            c.volume_servers[0].kill(grace=0.5)
            fd = os.open(m.mnt / "lost.bin", os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, b"never stored" * 100)
            with pytest.raises(OSError) as err:
                os.close(fd)
            assert err.value.errno == errno.EIO
            assert "upload of" in m.log.read_text()  # the logged reason
            with Client(c.filer.grpc_address) as client:
                names = client.listdir("/")  # (the bytes are on the stopped server)
                assert "lost.bin" not in names and "ok2.bin" in names
            assert _writes(m)["small_commits"] == small
        finally:
            m.stop()


def test_kept_bytes_give_way_to_another_clients_version(cluster, tmp_path):  # type: ignore[no-untyped-def]
    """A writer answers reads from the bytes it stored; once another client (weed mount)
    rewrites the file, reads through the still-open handle show that version."""
    m = _mount(cluster.filer.grpc_address, tmp_path)
    try:
        mine, theirs = b"m" * 5000, b"T" * 7000
        fd = os.open(m.mnt / "shared.bin", os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, mine, 0)
            os.fsync(fd)
            kept = _writes(m)["clean_reads"]
            assert os.pread(fd, 10000, 0) == mine
            assert _writes(m)["clean_reads"] > kept
            with weed_mount(cluster.filer, tmp_path) as wm:
                (wm / "shared.bin").write_bytes(theirs)
            deadline = time.monotonic() + 10
            while os.pread(fd, 10000, 0) != theirs:
                assert time.monotonic() < deadline, os.pread(fd, 10000, 0)[:20]
                time.sleep(0.1)
        finally:
            os.close(fd)
        assert (m.mnt / "shared.bin").read_bytes() == theirs
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]


def test_attributes_set_through_an_open_file_go_with_its_close(cluster, tmp_path):  # type: ignore[no-untyped-def]
    """As tar does: bytes, then times, owner and mode through the open file, then close.
    The attributes are the writer's until the close, which writes the entry once with
    all of them (no filer call before); stat answers them meanwhile."""
    m = _mount(cluster.filer.grpc_address, tmp_path)
    try:
        d = m.mnt / "tar-like"
        d.mkdir()
        data = random.Random(7).randbytes(9000)
        mtime_ns = 1_500_000_000_123_456_000
        owner = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        before = _writes(m)
        fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fchown(fd, *owner)
            os.fchmod(fd, 0o640)
            st = os.fstat(fd)
            assert (st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid) == \
                (len(data), mtime_ns, *owner)
            assert st.st_mode & 0o7777 == 0o640
            assert os.stat(d / "f").st_mode & 0o7777 == 0o640
            with Client(cluster.filer.grpc_address) as c, pytest.raises(FileNotFoundError):
                c.stat("/tar-like/f")  # nothing reached the filer yet
        finally:
            os.close(fd)
        assert _writes(m)["small_commits"] - before["small_commits"] == 1
        with weed_mount(cluster.filer, tmp_path) as wm:
            st = os.stat(wm / "tar-like" / "f")
            assert (st.st_size, st.st_mtime_ns // 1000, st.st_uid, st.st_gid) == \
                (len(data), mtime_ns // 1000, *owner)
            assert st.st_mode & 0o7777 == 0o640
            assert (wm / "tar-like" / "f").read_bytes() == data
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
