"""Read-only opens of held small files answered by the native loop (no pyfuse3 request
but the LOOKUP): every byte right, and every change the Python side must see still seen
(another writer's overwrite and delete, an unlink while open, a writer here, locks)."""

from __future__ import annotations

import fcntl
import os

import httpx
import pytest

from .conftest import FUSE_OK
from .mounts import held_files_beside_weed_mount, mount_state, until

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]


def test_held_files_open_natively_and_changes_still_show(cluster, tmp_path):  # type: ignore[no-untyped-def]
    files = {f"/mnopen/d/f{i:03d}.bin": os.urandom(3000 + 131 * i) for i in range(40)}
    with held_files_beside_weed_mount(cluster, tmp_path, files) as (mnt, weed):
        path = {p: mnt / p.lstrip("/") for p in files}
        for p, b in files.items():  # cold: every file looked up once, then opened
            assert path[p].read_bytes() == b, p
        st = mount_state(mnt)["native_reads"]
        # Held and planned at its lookup: even the first open of a file is the loop's,
        # unless its volume's location is not known yet (pyfuse3's open asks for it: the
        # first file of each of the few volumes).
        assert st["opens"] >= len(files) // 2, str(st)
        assert st["opens"] + st["loads_off_loop"] >= len(files), str(st)
        for p, b in files.items():  # warm
            assert path[p].read_bytes() == b, p
        until(lambda: mount_state(mnt)["native_reads"]["native_open"] == 0)
        st = mount_state(mnt)["native_reads"]
        assert st["opens"] >= len(files) + len(files) // 2, str(st)
        assert st["releases"] == st["opens"], str(st)
        assert st["failed"] == 0 and st["bytes"] >= sum(map(len, files.values())), st

        names = iter(files)
        # Another writer's overwrite (through the filer) and delete show.
        target = next(names)
        cluster.upload(target, b"rewritten elsewhere")
        until(lambda: path[target].read_bytes() == b"rewritten elsewhere")
        gone = next(names)
        httpx.delete(f"{cluster.filer.url}{gone}", timeout=30).raise_for_status()
        until(lambda: not path[gone].exists())
        # ...and through weed mount, while a native handle is open (which moves to the new
        # version, as every read handle here does).
        other = next(names)
        with open(path[other], "rb") as old:
            assert old.read(1) == files[other][:1]
            (weed / other.lstrip("/")).write_bytes(b"from weed mount")
            until(lambda: path[other].read_bytes() == b"from weed mount")

        # Unlinked while open natively: still read whole, gone from the directory at once,
        # and its close reaches the Python side (which then deletes its bytes).
        victim = next(names)
        opens = mount_state(mnt)["native_reads"]["opens"]
        f = open(path[victim], "rb")  # noqa: SIM115
        assert f.read(10) == files[victim][:10]
        assert mount_state(mnt)["native_reads"]["opens"] == opens + 1
        assert mount_state(mnt)["open_files"] == 0  # the loop's handle, not pyfuse3's
        os.unlink(path[victim])
        assert not path[victim].exists()
        assert f.read() == files[victim][10:]
        assert mount_state(mnt)["open_files"] == 1  # the loop's handle is the Python side's now
        f.close()
        until(lambda: mount_state(mnt)["open_files"] == 0)

        # flock and POSIX locks on natively opened files.
        locked = next(names)
        opens = mount_state(mnt)["native_reads"]["opens"]
        with open(path[locked], "rb") as a, open(path[locked], "rb") as b2:
            assert mount_state(mnt)["native_reads"]["opens"] == opens + 2
            fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(BlockingIOError):
                fcntl.flock(b2, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(a, fcntl.LOCK_UN)
            fcntl.flock(b2, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.lockf(a, fcntl.LOCK_SH | fcntl.LOCK_NB)
            assert a.read() == files[locked] and b2.read() == files[locked]

        # A writer here while a native read handle is open: the reader sees what is
        # written (through the writer), and the filer gets it at close.
        written = next(names)
        assert path[written].read_bytes() == files[written]  # (offered again if it was not)
        before = mount_state(mnt)["native_reads"]["opens"]
        with open(path[written], "rb") as r:
            assert mount_state(mnt)["native_reads"]["opens"] == before + 1
            with open(path[written], "r+b") as w:
                w.write(b"XYZ")
                w.flush()
                r.seek(0)
                assert r.read(5) == b"XYZ" + files[written][3:5]
        want = b"XYZ" + files[written][3:]
        assert path[written].read_bytes() == want
        got = httpx.get(f"{cluster.filer.url}{written}", timeout=30)
        assert got.content == want

        # A log rotation here (a -> a.1, then b -> a) while both are offered: each name
        # then opens its own file's bytes, natively or not.
        a, b = next(names), next(names)
        assert path[a].read_bytes() == files[a] and path[b].read_bytes() == files[b]
        rotated = path[a].with_name(path[a].name + ".1")
        os.rename(path[a], rotated)
        os.rename(path[b], path[a])
        for _ in range(3):  # looked up (and offered) again, then opened
            assert rotated.read_bytes() == files[a]
            assert path[a].read_bytes() == files[b]
            assert not path[b].exists()

        # Every other file still reads right, and nothing was left open.
        for p in names:
            assert path[p].read_bytes() == files[p], p
        until(lambda: mount_state(mnt)["native_reads"]["native_open"] == 0)
        assert mount_state(mnt)["open_files"] == 0
