"""fallocate on the mount (issue 24, item 9): posix_fallocate, KEEP_SIZE, PUNCH_HOLE and
ZERO_RANGE on files of several chunks, checked through our mount, through a fresh
``weed mount`` of the same filer and through the filer's HTTP GET; and what ``weed mount``
itself answers for each mode (recorded, see ``test_weed_mount_answers``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import FUSE_OK, weed_mount
from .mounts import beside_weed_mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

FLAGS = ["-chunkSizeLimitMB=1", "-cacheCapacityMB=0"]  # as conftest's weed mount
MiB = 1 << 20
KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE = 0x1, 0x2, 0x8, 0x10, 0x20
SIZE = 3 * MiB + 12345

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """libc ``fallocate``: 0, or the errno it failed with."""
    if _libc.fallocate(fd, mode, offset, length) == 0:
        return 0
    return ctypes.get_errno()


@pytest.fixture(scope="module")
def mounts(cluster, tmp_path_factory) -> Iterator[tuple[Path, Path]]:  # type: ignore[no-untyped-def]
    """(our mount, weed mount) of the same filer root."""
    with beside_weed_mount(cluster, tmp_path_factory.mktemp("fallocate"), FLAGS) as pair:
        yield pair


def _written(path: Path, seed: int) -> bytearray:
    """A file of several 1 MiB chunks, some overlapping (a range rewritten after an
    fsync); returns its bytes."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(SIZE))
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        patch = rng.randbytes(MiB + 4321)
        f.seek(1_500_000)
        f.write(patch)
    data[1_500_000:1_500_000 + len(patch)] = patch
    return data


def _zeroed(data: bytearray, offset: int, length: int, keep_size: bool) -> bytearray:
    out = bytearray(data)
    end = offset + length
    if not keep_size and end > len(out):
        out.extend(bytes(end - len(out)))
    stop = min(end, len(out))
    out[offset:stop] = bytes(max(0, stop - offset))
    return out


# name -> (mode, offset, length, the bytes expected after it); mode 0 is posix_fallocate,
# -1 fallocate(2) with mode 0
Case = tuple[int, int, int, Callable[[bytearray], bytearray]]
CASES: dict[str, Case] = {
    "posix": (0, SIZE - 100, 2 * MiB, lambda d: d + bytes(2 * MiB - 100)),
    # fallocate(2) mode 0 itself (not glibc's posix_fallocate): past the end, with a gap
    "alloc": (-1, SIZE + MiB, MiB, lambda d: d + bytes(2 * MiB)),
    "keep": (KEEP_SIZE, SIZE - 100, 2 * MiB, lambda d: d),
    "inside": (0, 1000, 5000, lambda d: d),
    # over the chunk [1 MiB, 2 MiB) whole, parts of its neighbours and the rewritten range
    "punch": (PUNCH_HOLE | KEEP_SIZE, 700_000, 1_500_000,
              lambda d: _zeroed(d, 700_000, 1_500_000, True)),
    "punch-tail": (PUNCH_HOLE | KEEP_SIZE, SIZE - 1000, 10 * MiB,
                   lambda d: _zeroed(d, SIZE - 1000, 10 * MiB, True)),
    "punch-aligned": (PUNCH_HOLE | KEEP_SIZE, MiB, MiB, lambda d: _zeroed(d, MiB, MiB, True)),
    "zero-keep": (ZERO_RANGE | KEEP_SIZE, 2_500_000, 2 * MiB,
                  lambda d: _zeroed(d, 2_500_000, 2 * MiB, True)),
    "zero-grow": (ZERO_RANGE, SIZE - 5000, MiB, lambda d: _zeroed(d, SIZE - 5000, MiB, False)),
    "zero-head": (ZERO_RANGE, 0, 300_000, lambda d: _zeroed(d, 0, 300_000, False)),
}
UNSUPPORTED = {"collapse": COLLAPSE_RANGE, "insert": INSERT_RANGE,
               "punch-no-keep": PUNCH_HOLE}


def _apply(path: Path, seed: int, case: Case) -> tuple[int, bytes]:
    """Writes the file, runs the case on a second handle; (errno, expected bytes)."""
    mode, offset, length, expect = case
    data = _written(path, seed)
    fd = os.open(path, os.O_RDWR)
    try:
        if mode == 0:
            try:
                os.posix_fallocate(fd, offset, length)
                err = 0
            except OSError as e:
                err = e.errno or -1
        else:
            err = fallocate(fd, max(mode, 0), offset, length)
        if err == 0:  # the handle that changed it reads the change at once
            want = bytes(expect(data))
            assert os.fstat(fd).st_size == len(want)
            assert os.pread(fd, len(want) + 10, 0) == want
    finally:
        os.close(fd)
    return err, bytes(expect(data)) if err == 0 else bytes(data)


def _http(cluster, rel: str) -> bytes:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{cluster.filer.url}/{rel}", timeout=60)
    r.raise_for_status()
    return r.content


def test_fallocate_modes(mounts, cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ours, _weed = mounts
    d = ours / "falloc-ours"
    d.mkdir()
    expected: dict[str, bytes] = {}
    for i, (name, case) in enumerate(CASES.items()):
        err, want = _apply(d / name, i, case)
        assert err == 0, (name, os.strerror(err))
        expected[name] = want
    for name, mode in UNSUPPORTED.items():
        data = _written(d / name, 100)
        fd = os.open(d / name, os.O_RDWR)
        try:
            assert fallocate(fd, mode, 0, MiB) == errno.EOPNOTSUPP, name
        finally:
            os.close(fd)
        expected[name] = bytes(data)
    # A read-only handle: EBADF, as POSIX asks.
    fd = os.open(d / "keep", os.O_RDONLY)
    try:
        assert fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 0, 10) == errno.EBADF
    finally:
        os.close(fd)

    for name, want in expected.items():  # our mount, new handles
        assert (d / name).stat().st_size == len(want), name
        assert (d / name).read_bytes() == want, name
    for name, want in expected.items():  # the filer
        assert _http(cluster, f"falloc-ours/{name}") == want, name
    # The chunk list: a punched range over whole chunks leaves them out of the entry (no
    # zeros uploaded); a range over parts of chunks is covered by newer chunks of zeros.
    for name, (lo, hi) in {"punch-aligned": (MiB, 2 * MiB),
                           "punch": (700_000, 2_200_000)}.items():
        r = httpx.get(f"{cluster.filer.url}/falloc-ours/{name}", params={"metadata": "true"},
                      timeout=30)
        chunks = [(int(c.get("offset", 0)), int(c["size"])) for c in r.json()["chunks"]]
        inside = [c for c in chunks if lo <= c[0] and c[0] + c[1] <= hi]
        if name == "punch-aligned":
            assert not [c for c in chunks if c[0] < hi and c[0] + c[1] > lo], chunks
        else:  # only the zeros written over the parts of the chunks at its ends
            assert inside == [(700_000, MiB - 700_000), (2 * MiB, 2_200_000 - 2 * MiB)], \
                chunks
    with weed_mount(cluster.filer, tmp_path) as fresh:  # a weed mount that never saw it
        for name, want in expected.items():
            assert (fresh / "falloc-ours" / name).read_bytes() == want, name


def test_weed_mount_answers(mounts, cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    """What ``weed mount`` answers for each mode (recorded in the output); where it
    succeeds, its bytes must be what the mode asks."""
    _ours, weed = mounts
    d = weed / "falloc-weed"
    d.mkdir()
    answers = {}
    for i, (name, case) in enumerate(CASES.items()):
        err, want = _apply(d / name, i, case)
        answers[name] = os.strerror(err) if err else "ok"
        if err == 0:
            assert (d / name).read_bytes() == want, name
        else:
            assert err == errno.EOPNOTSUPP, (name, os.strerror(err))
    for name, mode in UNSUPPORTED.items():
        _written(d / name, 100)
        fd = os.open(d / name, os.O_RDWR)
        try:
            err = fallocate(fd, mode, 0, MiB)
        finally:
            os.close(fd)
        answers[name] = os.strerror(err) if err else "ok"
        assert err == errno.EOPNOTSUPP, name
    with capsys.disabled():
        print("\nweed mount fallocate answers:", answers)
