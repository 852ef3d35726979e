"""LOOKUPs of held files answered by the native loop, for the files of a directory offered
ahead of their first lookup: a file read whole then costs the Python operations no
request. Every byte is checked, the kernel's references stay counted (a listing that
gives some back, the kernel forgetting every inode), and changes here, through the filer
and through weed mount still show."""

from __future__ import annotations

import errno
import fcntl
import os
import termios
from pathlib import Path

import httpx
import pytest

from .conftest import FUSE_OK
from .mounts import held_files_beside_weed_mount, mount_state, until

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]


def test_lookups_of_held_files_are_native_and_changes_still_show(cluster, tmp_path):  # type: ignore[no-untyped-def]
    files = {f"/mnlook/d/f{i:03d}.bin": os.urandom(2000 + 97 * i) for i in range(60)}
    with held_files_beside_weed_mount(cluster, tmp_path, files) as (mnt, weed):
        path = {p: mnt / p.lstrip("/") for p in files}
        names = sorted(files)
        # The first files go through Python (the directory is listed at the first, and
        # its files are offered ahead in the background); then the loop answers the rest.
        for p in names[:3]:
            assert path[p].read_bytes() == files[p]
        until(lambda: mount_state(mnt)["ahead_offered"] >= len(files) - 3)
        before = mount_state(mnt)["native_reads"]
        for p in names[3:]:
            assert path[p].read_bytes() == files[p], p
        after = mount_state(mnt)["native_reads"]
        looked_up = after["lookups"] - before["lookups"]
        assert looked_up == len(files) - 3, (before, after)
        assert after["opens"] - before["opens"] == len(files) - 3, (before, after)
        # Nothing of those files reached the Python side: no LOOKUP, OPEN, READ,
        # FLUSH or RELEASE (the loop forwards a few unrelated requests meanwhile).
        assert after["forwarded"] - before["forwarded"] < 5, (before, after)
        assert os.stat(path[names[10]]).st_size == len(files[names[10]])
        # (Python's open() asks isatty() of each file: an IOCTL the loop refuses, as
        # libfuse does for pyfuse3.)
        assert after["ioctls"] - before["ioctls"] >= len(files) - 3, (before, after)
        with open(path[names[4]], "rb") as f:
            assert not os.isatty(f.fileno())
            with pytest.raises(OSError) as e:
                fcntl.ioctl(f.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            assert e.value.errno == errno.ENOTTY

        # A listing gives back the references of the entries that did not fit its buffer:
        # the ones the loop handed out are counted too, so none of those numbers is
        # dropped while the kernel holds it.
        d = mnt / "mnlook" / "d"
        assert sorted(os.listdir(d)) == [p.rsplit("/", 1)[1] for p in names]
        for p in names:
            assert os.stat(path[p]).st_size == len(files[p]), p
            assert path[p].read_bytes() == files[p], p

        # Changes: another writer's overwrite (filer) and delete, a weed mount write of a
        # file offered ahead and never looked up here, a rename here.
        target, gone, renamed = names[20], names[21], names[22]
        cluster.upload(target, b"rewritten elsewhere")
        until(lambda: path[target].read_bytes() == b"rewritten elsewhere")
        assert os.stat(path[target]).st_size == len(b"rewritten elsewhere")
        httpx.delete(f"{cluster.filer.url}{gone}", timeout=30).raise_for_status()
        until(lambda: not path[gone].exists())
        new = d / "renamed.bin"
        os.rename(path[renamed], new)
        assert not path[renamed].exists() and new.read_bytes() == files[renamed]
        fresh = "/mnlook/d/later.bin"
        cluster.upload(fresh, b"x" * 5000)
        until(lambda: mount_state(mnt)["ahead_offered"] > 0 and (mnt / fresh[1:]).exists())
        (weed / fresh.lstrip("/")).write_bytes(b"from weed mount")
        until(lambda: (mnt / fresh[1:]).read_bytes() == b"from weed mount")
        assert os.stat(mnt / fresh[1:]).st_size == len(b"from weed mount")

        # The kernel forgets every inode it can: the loop's references come back with the
        # FORGETs, numbers nobody holds are dropped, and every file still reads right.
        inodes = mount_state(mnt)["inodes"]
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
        until(lambda: mount_state(mnt)["inodes"] < inodes - len(files) // 2)
        left = [p for p in names if p not in (target, gone, renamed)]
        for p in left:
            assert path[p].read_bytes() == files[p], p
        assert new.read_bytes() == files[renamed]
        st = mount_state(mnt)["native_reads"]
        assert st["failed"] == 0 and st["errors"] == 0, st
