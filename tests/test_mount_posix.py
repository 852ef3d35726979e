"""POSIX behaviour of the mount beside ``weed mount`` on the same cluster (issue 24).

Each scenario runs in a directory of its own on our mount and on a ``weed mount`` of the
same filer, with the same flags; the observations must be the same (and what POSIX asks),
and what one mount makes the other must read the same way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import FUSE_OK
from .mounts import beside_weed_mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

FLAGS = ["-chunkSizeLimitMB=1", "-cacheCapacityMB=0"]  # as conftest's weed mount


@pytest.fixture(scope="module")
def mounts(cluster, tmp_path_factory) -> Iterator[tuple[Path, Path]]:  # type: ignore[no-untyped-def]
    """(our mount, weed mount) of the same filer root."""
    with beside_weed_mount(cluster, tmp_path_factory.mktemp("posix"), FLAGS) as pair:
        yield pair


def _fresh(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir()
    return d


def _both(mounts: tuple[Path, Path], name: str, scenario: Callable[[Path], Any]
          ) -> tuple[Any, Any]:
    ours, weed = mounts
    return scenario(_fresh(ours, f"{name}-ours")), scenario(_fresh(weed, f"{name}-weed"))


def _until(check: Callable[[], bool], limit_s: float = 20.0) -> bool:
    """weed mount writes entries in the background: waits until ``check`` holds."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


# -- 1. special files --------------------------------------------------------------------

def _specials(d: Path) -> list[tuple[str, int, int]]:
    old = os.umask(0)
    try:
        os.mkfifo(d / "fifo", 0o640)
        os.mknod(d / "chr", 0o644 | stat.S_IFCHR, os.makedev(1, 2))
        os.mknod(d / "blk", 0o600 | stat.S_IFBLK, os.makedev(3, 4))
        os.mknod(d / "reg", 0o600 | stat.S_IFREG)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(d / "sock"))
        s.close()
    finally:
        os.umask(old)
    return [(n, os.lstat(d / n).st_mode, os.lstat(d / n).st_rdev)
            for n in ("fifo", "chr", "blk", "reg", "sock")]


def test_special_files_as_weed_mount(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "special", _specials)
    assert ours == weed
    assert [stat.S_IFMT(m) for _, m, _ in ours] == [
        stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFREG, stat.S_IFSOCK]
    # what one mount made, the other reads the same way
    assert _until(lambda: [(n, os.lstat(mounts[1] / "special-ours" / n).st_mode,
                            os.lstat(mounts[1] / "special-ours" / n).st_rdev)
                           for n in ("fifo", "chr", "blk", "reg", "sock")] == ours)
    assert [(n, os.lstat(mounts[0] / "special-weed" / n).st_mode,
             os.lstat(mounts[0] / "special-weed" / n).st_rdev)
            for n in ("fifo", "chr", "blk", "reg", "sock")] == weed


# -- 2. modes -----------------------------------------------------------------------------

def _modes(d: Path) -> list[int]:
    out = []
    for mask in (0, 0o022, 0o077):
        old = os.umask(mask)
        try:
            os.mkdir(d / f"d{mask}", 0o777)
            os.close(os.open(d / f"f{mask}", os.O_CREAT | os.O_WRONLY, 0o777))
        finally:
            os.umask(old)
        out += [stat.S_IMODE(os.stat(d / f"d{mask}").st_mode),
                stat.S_IMODE(os.stat(d / f"f{mask}").st_mode)]
    return out


def test_modes_are_the_callers_after_its_umask(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "modes", _modes)
    assert ours == weed == [0o777, 0o777, 0o755, 0o755, 0o700, 0o700]


def test_defaults_as_weed_mount(mounts: tuple[Path, Path]) -> None:
    ours, weed = mounts
    opts = {line.split()[1]: line.split()[3] for line in Path("/proc/mounts").read_text()
            .splitlines()}
    assert "allow_other" in opts[str(ours)].split(",")
    assert "allow_other" in opts[str(weed)].split(",")
    assert stat.S_IMODE(os.stat(ours).st_mode) == stat.S_IMODE(os.stat(weed).st_mode)


# -- 3. names longer than NAME_MAX ------------------------------------------------------------

def _long_names(d: Path) -> list[tuple[str, int]]:
    long, ok = "x" * 256, "y" * 255
    (d / ok).write_bytes(b"data")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("open_creat", lambda: os.open(d / long, os.O_RDONLY | os.O_CREAT, 0o644)),
        ("chmod", lambda: os.chmod(d / long, 0o644)),
        ("chown", lambda: os.chown(d / long, 0, 0)),
        ("lchown", lambda: os.lchown(d / long, 0, 0)),
        ("link", lambda: os.link(d / ok, d / long)),
        ("rename", lambda: os.rename(d / ok, d / long)),
        ("rename_from", lambda: os.rename(d / long, d / "z")),
        ("rmdir", lambda: os.rmdir(d / long)),
        ("mkdir", lambda: os.mkdir(d / long)),
        ("truncate", lambda: os.truncate(d / long, 0)),
        ("unlink", lambda: os.unlink(d / long)),
        ("symlink", lambda: os.symlink("t", d / long)),
        ("mkfifo", lambda: os.mkfifo(d / long)),
    ]
    out = []
    for what, call in calls:
        try:
            call()
            out.append((what, 0))
        except OSError as e:
            out.append((what, e.errno or 0))
    assert (d / ok).read_bytes() == b"data" and os.listdir(d) == [ok]
    return out


def test_names_over_255_bytes_are_enametoolong(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "long", _long_names)
    assert ours == weed == [(what, errno.ENAMETOOLONG) for what, _ in ours]


# -- 4. hard links ---------------------------------------------------------------------------

def _links(d: Path) -> tuple[int, int, bool, bytes]:
    (d / "a").write_bytes(b"first")
    os.link(d / "a", d / "b")
    with open(d / "b", "r+b") as f:
        f.write(b"FIRST")
    a, b = os.stat(d / "a"), os.stat(d / "b")
    return a.st_nlink, b.st_nlink, a.st_ino == b.st_ino, (d / "a").read_bytes()


def test_hard_links_interoperate(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "links", _links)
    assert ours == weed == (2, 2, True, b"FIRST")
    ours_root, weed_root = mounts
    # a link made by one mount is a link in the other
    for root, made in ((weed_root, "links-ours"), (ours_root, "links-weed")):
        d = root / made
        assert _until(lambda d=d: os.stat(d / "b").st_nlink == 2  # type: ignore[misc]
                      and os.stat(d / "a").st_ino == os.stat(d / "b").st_ino
                      and (d / "b").read_bytes() == b"FIRST"), d
    os.unlink(ours_root / "links-ours" / "a")
    assert os.stat(ours_root / "links-ours" / "b").st_nlink == 1
    assert (ours_root / "links-ours" / "b").read_bytes() == b"FIRST"
    assert _until(lambda: os.stat(weed_root / "links-ours" / "b").st_nlink == 1
                  and (weed_root / "links-ours" / "b").read_bytes() == b"FIRST")


# -- 5. and 6. times ------------------------------------------------------------------------

def _dir_times(d: Path) -> list[bool]:
    out = []

    def moved(action: Callable[[], object]) -> bool:
        before = os.stat(d)
        time.sleep(0.05)
        action()
        after = os.stat(d)
        return (after.st_mtime_ns > before.st_mtime_ns
                and after.st_ctime_ns > before.st_ctime_ns)

    out.append(moved(lambda: (d / "f").write_bytes(b"x")))
    out.append(moved(lambda: os.mkdir(d / "sub")))
    out.append(moved(lambda: os.rename(d / "f", d / "g")))
    out.append(moved(lambda: os.symlink("g", d / "ln")))
    out.append(moved(lambda: os.unlink(d / "ln")))
    out.append(moved(lambda: os.rmdir(d / "sub")))
    return out


def test_directory_times_move_with_their_names(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "dirtimes", _dir_times)
    assert ours == weed == [True] * 6
    # and the other mount sees the directory's new mtime
    mtime = os.stat(mounts[0] / "dirtimes-ours").st_mtime_ns
    assert _until(lambda: os.stat(mounts[1] / "dirtimes-ours").st_mtime_ns == mtime)


def _atime(d: Path) -> tuple[int, int]:
    (d / "f").write_bytes(b"x")
    os.utime(d / "f", ns=(5_000_000_000, 7_000_000_000))
    os.utime(d / "f", ns=(9_000_000_000, 7_000_000_000))  # atime alone moves
    st = os.stat(d / "f")
    return st.st_atime_ns, st.st_mtime_ns


def test_atime_is_kept_apart_from_mtime(mounts: tuple[Path, Path], cluster) -> None:  # type: ignore[no-untyped-def]
    ours, weed = _both(mounts, "atime", _atime)
    assert ours == weed == (9_000_000_000, 7_000_000_000)
    # the filer keeps it in the entry's Atime, where weed mount keeps its own (weed mount
    # 4.48 shows the mtime as the atime of entries it did not set itself)
    r = httpx.get(f"{cluster.filer.url}/atime-ours/f", params={"metadata": "true"}, timeout=30)
    assert r.json()["Atime"].startswith("1970-01-01T00:00:09")


# -- 7. open and unlinked --------------------------------------------------------------------

def _open_unlinked(d: Path) -> tuple[int, bytes, bool, int]:
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"hello")
        os.unlink(d / "f")
        os.write(fd, b" world")
        os.fsync(fd)
        data = os.pread(fd, 100, 0)
        return os.fstat(fd).st_nlink, data, (d / "f").exists(), len(os.listdir(d))
    finally:
        os.close(fd)


def test_open_unlinked_file_stays_usable(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "unlinked", _open_unlinked)
    assert ours == weed == (0, b"hello world", False, 0)
    assert _until(lambda: os.listdir(mounts[1] / "unlinked-ours") == [])


# -- 10. metadata-only setattr -----------------------------------------------------------------

def _chmod_keeps_bytes(d: Path) -> tuple[bool, bool, bytes, int]:
    (d / "f").write_bytes(b"small inline-sized content")
    os.utime(d / "f", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = os.stat(d / "f")
    time.sleep(0.05)
    os.chmod(d / "f", 0o600)
    os.chown(d / "f", 1234, 5678)
    after = os.stat(d / "f")
    return (after.st_mtime_ns == before.st_mtime_ns, after.st_ctime_ns > before.st_ctime_ns,
            (d / "f").read_bytes(), stat.S_IMODE(after.st_mode))


def test_chmod_chown_touch_only_metadata(mounts: tuple[Path, Path]) -> None:
    ours, weed = _both(mounts, "setattr", _chmod_keeps_bytes)
    assert ours == weed == (True, True, b"small inline-sized content", 0o600)
    assert _until(lambda: (mounts[1] / "setattr-ours" / "f").read_bytes()
                  == b"small inline-sized content"
                  and os.stat(mounts[1] / "setattr-ours" / "f").st_uid == 1234)


# -- 11. beyond weed mount: renameat2, statfs, locks, xattrs --------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def _renameat2(old: Path, new: Path, flags: int) -> int:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) == 0:
        return 0
    return ctypes.get_errno()


def test_renameat2_noreplace_and_exchange(mounts: tuple[Path, Path]) -> None:
    d = _fresh(mounts[0], "renameat2")
    (d / "a").write_bytes(b"A")
    (d / "b").write_bytes(b"B")
    assert _renameat2(d / "a", d / "b", 1) == errno.EEXIST  # RENAME_NOREPLACE
    assert _renameat2(d / "a", d / "c", 1) == 0
    assert _renameat2(d / "c", d / "b", 2) == 0  # RENAME_EXCHANGE
    assert (d / "c").read_bytes() == b"B" and (d / "b").read_bytes() == b"A"
    assert sorted(os.listdir(d)) == ["b", "c"]
    assert _renameat2(d / "c", d / "nothere", 2) == errno.ENOENT
    assert _until(lambda: (mounts[1] / "renameat2" / "c").read_bytes() == b"B"
                  and sorted(os.listdir(mounts[1] / "renameat2")) == ["b", "c"])


def test_statfs_is_the_clusters(mounts: tuple[Path, Path]) -> None:
    ours, weed = (os.statvfs(m) for m in mounts)
    assert ours.f_namemax == 255
    total = ours.f_blocks * ours.f_frsize
    assert 0 < total < 1 << 50  # the cluster's capacity, not a made-up huge number
    print("statfs total bytes: ours", total, "weed mount", weed.f_blocks * weed.f_frsize)


def test_locks_are_local_to_the_mount(mounts: tuple[Path, Path]) -> None:
    import fcntl
    d = _fresh(mounts[0], "locks")
    (d / "f").write_bytes(b"x" * 100)
    with open(d / "f", "r+b") as f1, open(d / "f", "r+b") as f2:
        fcntl.flock(f1, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(f2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f1, fcntl.LOCK_UN)
        fcntl.lockf(f1, fcntl.LOCK_EX, 10, 0)  # byte-range: another process is refused
        probe = ("import fcntl, sys\n"
                 "f = open(sys.argv[1], 'r+b')\n"
                 "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)\n"
                 "try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\n"
                 "except BlockingIOError:\n    sys.exit(7)\n")
        r = subprocess.run([sys.executable, "-c", probe, str(d / "f")])
        assert r.returncode == 7


def test_xattrs_read_by_weed_mount(mounts: tuple[Path, Path]) -> None:
    d = _fresh(mounts[0], "xattrs")
    (d / "f").write_bytes(b"x")
    os.setxattr(d / "f", "user.color", b"blue")
    assert _until(lambda: os.getxattr(mounts[1] / "xattrs" / "f", "user.color") == b"blue")
    os.setxattr(mounts[1] / "xattrs" / "f", "user.size", b"big")
    assert _until(lambda: os.getxattr(d / "f", "user.size") == b"big")
