"""Writes through the mount, against the real cluster: a seeded fsx-style run in lock step
with a local directory, interoperability with ``weed mount`` and the Client, metadata
pushed by the filer, and faults (a volume server stopped mid-write, the mount killed)."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

from .conftest import FUSE_OK, weed_mount
from .mounts import Mount, fast_bytes, fast_failures

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]

MIB = 1 << 20


def _mount(filer: str, tmp_path: Path, *extra: str, name: str = "mnt") -> Mount:
    mnt = tmp_path / name
    mnt.mkdir(exist_ok=True)
    return Mount([f"-filer={filer}", *extra], mnt, tmp_path / f"{name}.log")


@pytest.fixture(scope="module")
def wmount(cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A read-write mount with small chunks (so files have many) and a long TTL (so
    freshness comes from the filer's events, not from expiry)."""
    m = _mount(cluster.filer.grpc_address, tmp_path_factory.mktemp("wmount"),
               "-chunkSizeLimitMB=1", "-cacheMetaTtlSec=60", "-concurrentWriters=8")
    yield m
    assert m.stop() == 0, m.log.read_text()[-3000:]


def _tree(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """``{relative path: (kind, size, permission bits, bytes or link target)}``."""
    out: dict[str, tuple[str, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, 0, os.readlink(p).encode())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, stat.S_IMODE(st.st_mode), b"")
            else:
                out[rel] = ("file", st.st_size, stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


# -- fsx: random operations in lock step with a local directory ---------------------------

def _brief(value: object) -> str:
    """A result, with byte strings shown by length and a prefix (not in full)."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes {value[:8].hex()}>"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_brief(v) for v in value) + ")"
    return repr(value)


class Fsx:
    """Runs each operation on the mount and on a local directory and compares."""

    def __init__(self, mnt: Path, local: Path, seed: int) -> None:
        self.roots = (mnt, local)
        self.rng = random.Random(seed)
        self.log: list[str] = []

    def names(self, kind: str) -> list[str]:
        local = self.roots[1]
        out = []
        for dirpath, dirnames, filenames in os.walk(local):
            base = Path(dirpath).relative_to(local)
            items = dirnames if kind == "dir" else filenames
            out += [str(base / n) for n in items]
        return sorted(out)

    def dirs(self) -> list[str]:
        return [".", *self.names("dir")]

    def both(self, what: str, fn) -> list[str]:  # type: ignore[no-untyped-def]
        """Runs ``fn(root)`` on both roots; both must succeed or fail with one errno.
        Returns the relative paths to compare afterwards."""
        self.log.append(what)
        results = []
        for root in self.roots:
            try:
                results.append(("ok", fn(root)))
            except OSError as e:
                results.append(("err", e.errno))
        if results[0] != results[1]:
            raise AssertionError(f"{what}: mount {_brief(results[0])} vs local "
                                 f"{_brief(results[1])}")
        return []

    def step(self) -> list[str]:
        r = self.rng
        files, dirs = self.names("file"), self.dirs()
        op = r.choices(["create", "write", "append", "truncate", "rename", "unlink", "mkdir",
                        "rmdir", "chmod", "read", "rw"],
                       [8, 14, 5, 6, 5, 3, 2, 2, 3, 6, 6])[0]
        if not files and op not in ("mkdir", "rmdir"):
            op = "create"
        if op == "create":
            name = str(Path(r.choice(dirs)) / f"f{r.randrange(40)}")
            data = r.randbytes(r.choice([0, 1, 100, 4096, 70_000, MIB + 3, 2 * MIB + 777]))

            def create(root: Path) -> None:
                fd = os.open(root / name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            self.both(f"create {name} {len(data)}", create)
            return [name]
        if op == "mkdir":
            name = str(Path(r.choice(dirs)) / f"d{r.randrange(6)}")
            self.both(f"mkdir {name}", lambda root: os.mkdir(root / name))
            return [name]
        if op == "rmdir":
            if len(dirs) < 2:
                return []
            name = r.choice(dirs[1:])
            self.both(f"rmdir {name}", lambda root: os.rmdir(root / name))
            return [str(Path(name).parent)]
        name = r.choice(files)
        if op in ("write", "rw"):
            size = os.path.getsize(self.roots[1] / name)
            writes = []
            for _ in range(r.randrange(1, 5)):
                off = r.randrange(0, size + 300_000)
                writes.append((off, r.randbytes(r.choice([1, 10, 5000, 200_000, MIB + 5]))))
            reads = [(r.randrange(0, size + MIB), r.choice([1, 4096, 300_000, 3 * MIB]))
                     for _ in range(3)] if op == "rw" else []
            fsync = r.random() < 0.3

            def write(root: Path) -> list[bytes]:
                fd = os.open(root / name, os.O_RDWR)
                got = []
                try:
                    for off, data in writes:
                        os.pwrite(fd, data, off)
                        if fsync:
                            os.fsync(fd)
                    for off, n in reads:  # dirty bytes must read back before close
                        got.append(os.pread(fd, n, off))
                    got.append(os.fstat(fd).st_size.to_bytes(8, "big"))
                finally:
                    os.close(fd)
                return got
            self.both(f"{op} {name} {[(o, len(d)) for o, d in writes]} reads={reads}", write)
            return [name]
        if op == "append":
            data = r.randbytes(r.choice([1, 999, 150_000]))

            def append(root: Path) -> None:
                with open(root / name, "ab") as f:
                    f.write(data)
            self.both(f"append {name} {len(data)}", append)
            return [name]
        if op == "truncate":
            size = r.choice([0, 1, 5000, MIB, MIB + 1, 3 * MIB + 5,
                             r.randrange(0, 4 * MIB)])
            self.both(f"truncate {name} {size}", lambda root: os.truncate(root / name, size))
            return [name]
        if op == "rename":
            target = (str(Path(r.choice(dirs)) / f"f{r.randrange(40)}") if r.random() < 0.7
                      else r.choice(files))
            self.both(f"rename {name} {target}",
                      lambda root: os.rename(root / name, root / target))
            return [name, target]
        if op == "unlink":
            self.both(f"unlink {name}", lambda root: os.unlink(root / name))
            return [name]
        if op == "chmod":
            mode = r.choice([0o600, 0o644, 0o755, 0o640, 0o400, 0o777])
            self.both(f"chmod {name} {oct(mode)}", lambda root: os.chmod(root / name, mode))
            return [name]
        # read
        size = os.path.getsize(self.roots[1] / name)
        off, n = r.randrange(0, size + 10), r.choice([1, 4096, 200_000, 5 * MIB])

        def read(root: Path) -> bytes:
            with open(root / name, "rb") as f:
                f.seek(off)
                return f.read(n)
        self.both(f"read {name} {off}+{n}", read)
        return [name]

    def compare(self, touched: list[str]) -> None:
        mnt, local = self.roots
        for rel in {str(Path(t).parent) for t in touched} | {"."}:
            want = sorted(os.listdir(local / rel)) if (local / rel).is_dir() else None
            got = sorted(os.listdir(mnt / rel)) if want is not None else None
            assert got == want, f"listing of {rel}"
        for rel in touched:
            lp, mp = local / rel, mnt / rel
            if not lp.exists():
                assert not mp.exists(), f"{rel} exists on the mount only"
                continue
            ls, ms = os.stat(lp), os.stat(mp)
            assert stat.S_IFMT(ls.st_mode) == stat.S_IFMT(ms.st_mode), rel
            assert stat.S_IMODE(ls.st_mode) == stat.S_IMODE(ms.st_mode), f"mode of {rel}"
            if stat.S_ISREG(ls.st_mode):
                assert ms.st_size == ls.st_size, f"size of {rel}"
                assert mp.read_bytes() == lp.read_bytes(), f"bytes of {rel}"


def test_fsx_random_operations_in_lock_step(wmount, tmp_path):  # type: ignore[no-untyped-def]
    seed = int(os.environ.get("SEAWEED_FSX_SEED", random.randrange(1 << 30)))
    ops = int(os.environ.get("SEAWEED_FSX_OPS", "1000"))
    print(f"fsx seed {seed} (SEAWEED_FSX_SEED={seed} reruns it), {ops} operations")
    root = wmount.mnt / f"fsx-{seed}"
    local = tmp_path / "local"
    os.mkdir(root)
    os.mkdir(local)
    fsx = Fsx(root, local, seed)
    try:
        for _ in range(ops):
            fsx.compare(fsx.step())
        assert _tree(root) == _tree(local)
    except AssertionError as e:
        tail = "\n  ".join(fsx.log[-8:])
        raise AssertionError(f"fsx seed {seed} (rerun with SEAWEED_FSX_SEED={seed}), "
                             f"step {len(fsx.log)}: {e}\n last ops:\n  {tail}") from e


# -- semantics and errnos ------------------------------------------------------------------

def test_errnos_and_attributes(wmount, cluster):  # type: ignore[no-untyped-def]
    d = wmount.mnt / "semantics"
    d.mkdir()
    (d / "sub").mkdir()
    (d / "sub" / "x").write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.rmdir(d / "sub")
    assert e.value.errno == errno.ENOTEMPTY
    (d / "other").mkdir()
    (d / "other" / "y").write_bytes(b"y")
    with pytest.raises(OSError) as e:
        os.rename(d / "sub", d / "other")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        os.open(d / "sub" / "x", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with pytest.raises(OSError) as e:
        os.link(d / "sub", d / "hard")
    assert e.value.errno == errno.EPERM  # no hard links to directories
    # the caller's mode after the caller's umask (022 here), as weed mount; owner is the caller
    os.umask(0o022)
    fd = os.open(d / "wide", os.O_CREAT | os.O_WRONLY, 0o777)
    os.close(fd)
    st = os.stat(d / "wide")
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid, st.st_gid) == \
        (os.getuid(), os.getgid())
    os.chown(d / "wide", 1234, 5678)
    os.utime(d / "wide", ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    st = os.stat(d / "wide")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns // 10**9 == 1_600_000_000
    # xattrs, stored as weed mount stores them
    os.setxattr(d / "wide", "user.color", b"blue")
    assert os.getxattr(d / "wide", "user.color") == b"blue"
    assert "user.color" in os.listxattr(d / "wide")
    os.removexattr(d / "wide", "user.color")
    with pytest.raises(OSError) as e:
        os.removexattr(d / "wide", "user.color")
    assert e.value.errno == errno.ENODATA
    os.symlink("sub/x", d / "ln")
    assert os.readlink(d / "ln") == "sub/x" and (d / "ln").read_bytes() == b"x"
    os.rename(d / "sub" / "x", d / "other" / "y")  # across directories, replacing
    assert (d / "other" / "y").read_bytes() == b"x" and os.listdir(d / "sub") == []
    # nothing visible half-written: another reader sees the old bytes until close
    with Client(cluster.filer.grpc_address, meta_ttl=0) as c:
        with open(d / "other" / "y", "r+b", buffering=0) as f:
            f.write(b"NEW" * 1000)
            assert c.read("/semantics/other/y") == b"x"
        assert c.read("/semantics/other/y") == b"NEW" * 1000


# -- interoperability ----------------------------------------------------------------------

def _write_sample_tree(root: Path, rng: random.Random, xattr: bool = True) -> None:
    (root / "a" / "b").mkdir(parents=True)
    for i, size in enumerate([0, 1, 4095, MIB - 1, MIB, MIB + 1, 3 * MIB + 77]):
        (root / "a" / f"f{i}.bin").write_bytes(rng.randbytes(size))
    (root / "a" / "b" / "text.txt").write_bytes(b"the rain in spain\n" * 50_000)
    # overwrites in the middle, a sparse tail, fsync in between
    with open(root / "a" / "b" / "patched.bin", "w+b") as f:
        f.write(rng.randbytes(2 * MIB + 5))
        f.flush()
        os.fsync(f.fileno())
        for _ in range(6):
            f.seek(rng.randrange(0, 2 * MIB))
            f.write(rng.randbytes(rng.randrange(1, 300_000)))
            os.fsync(f.fileno())
        f.truncate(4 * MIB + 3)
    os.symlink("f1.bin", root / "a" / "link")
    os.chmod(root / "a" / "f2.bin", 0o600)
    if xattr:
        os.setxattr(root / "a" / "f3.bin", "user.tag", b"value")


def test_tree_written_here_reads_through_weed_mount_and_client(wmount, cluster, tmp_path):  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    src = wmount.mnt / "interop-out"
    src.mkdir()
    _write_sample_tree(src, rng)
    local = tmp_path / "ref"
    local.mkdir()
    _write_sample_tree(local, random.Random(7), xattr=False)
    want = _tree(local)
    assert _tree(src) == want
    with weed_mount(cluster.filer, tmp_path) as wm:
        assert _tree(wm / "interop-out") == want
        assert os.getxattr(wm / "interop-out" / "a" / "f3.bin", "user.tag") == b"value"
    notes = []
    with Client(cluster.filer.grpc_address) as c:
        for rel, (kind, _size, _mode, data) in want.items():
            if kind == "file":
                assert c.read(f"/interop-out/{rel}") == data, rel
                r = httpx.get(f"{cluster.filer.url}/interop-out/{rel}", timeout=60)
                if r.content != data:  # the 4.48 filer's own GET is not the judge
                    notes.append(f"filer GET {rel}: {r.status_code} {len(r.content)} bytes")
    print("filer GET notes:", notes or "none")


def test_tree_written_by_weed_mount_reads_here(wmount, cluster, tmp_path):  # type: ignore[no-untyped-def]
    with weed_mount(cluster.filer, tmp_path) as wm:
        (wm / "interop-in").mkdir()
        _write_sample_tree(wm / "interop-in", random.Random(8))
    local = tmp_path / "ref"
    local.mkdir()
    _write_sample_tree(local, random.Random(8), xattr=False)
    want = _tree(local)
    deadline = time.monotonic() + 20  # weed mount flushes metadata asynchronously
    while True:
        try:
            got = _tree(wmount.mnt / "interop-in")
        except OSError:
            got = {}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert got == want
    assert os.getxattr(wmount.mnt / "interop-in" / "a" / "f3.bin", "user.tag") == b"value"


def test_source_tarball_extracts_byte_exact(wmount, tmp_path):  # type: ignore[no-untyped-def]
    pkg = Path(__file__).resolve().parents[1] / "python" / "seaweed_rdma"
    tarball = tmp_path / "src.tar"
    with tarfile.open(tarball, "w") as t:
        t.add(pkg, arcname="seaweed_rdma",
              filter=lambda i: None if "__pycache__" in i.name else i)
    ref = tmp_path / "ref"
    ref.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(ref)], check=True)
    dest = wmount.mnt / "untar"
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(dest)], check=True)
    out = subprocess.run(["diff", "-r", str(ref), str(dest)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


# -- metadata pushed by the filer ----------------------------------------------------------

def _within(seconds: float, check) -> float:  # type: ignore[no-untyped-def]
    """Polls ``check`` until it holds; returns how long it took (fails past ``seconds``)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > seconds:
            pytest.fail(f"not visible within {seconds}s")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_filer_change_visible_within_1s_with_long_ttl(wmount, cluster):  # type: ignore[no-untyped-def]
    base = wmount.mnt / "pushed"
    cluster.upload("/pushed/seed.txt", b"seed")
    assert (base / "seed.txt").read_bytes() == b"seed"  # now cached, for 60 s by TTL
    assert os.listdir(base) == ["seed.txt"]

    def content(p: Path) -> bytes | None:
        try:
            return p.read_bytes()
        except FileNotFoundError:
            return None

    # Each change is timed from when the filer acknowledged it.
    cluster.upload("/pushed/seed.txt", b"changed content")
    _within(1.0, lambda: content(base / "seed.txt") == b"changed content")
    cluster.upload("/pushed/new.txt", b"new")
    _within(1.0, lambda: "new.txt" in os.listdir(base) and content(base / "new.txt") == b"new")
    r = httpx.post(f"{cluster.filer.url}/pushed/moved.txt", params={"mv.from": "/pushed/new.txt"})
    assert r.status_code < 300, r.text
    _within(1.0, lambda: content(base / "new.txt") is None
            and content(base / "moved.txt") == b"new")
    httpx.delete(f"{cluster.filer.url}/pushed/seed.txt")
    _within(1.0, lambda: not (base / "seed.txt").exists()
            and "seed.txt" not in os.listdir(base))
    state = wmount.state()["writes"]
    assert state["meta_stream_up"] and state["meta_events"] >= 4


# -- faults --------------------------------------------------------------------------------

def test_volume_server_stopped_during_large_write(tmp_path):  # type: ignore[no-untyped-def]
    with LocalCluster(volumes=1) as c:
        m = _mount(c.filer.grpc_address, tmp_path, "-chunkSizeLimitMB=1")
        try:
            old = random.Random(1).randbytes(3 * MIB)
            (m.mnt / "big.bin").write_bytes(old)
            with Client(c.filer.grpc_address) as client:
                assert client.read("/big.bin") == old
            failed: OSError | None = None
            f = open(m.mnt / "big.bin", "r+b")  # noqa: SIM115 (closed below, may fail)
            try:
                for i in range(40):
                    if i == 3:
                        c.volume_servers[0].kill(grace=0.5)
                    f.write(random.Random(i).randbytes(MIB))
            except OSError as e:
                failed = e
            try:
                f.close()
            except OSError as e:
                failed = failed or e
            assert failed is not None and failed.errno == errno.EIO
            assert "upload of" in m.log.read_text()  # the logged reason
            # The entry was not updated: what the filer names is the last good version.
            with Client(c.filer.grpc_address) as client:
                info = client.stat("/big.bin")
                assert info["size"] == len(old)
        finally:
            m.stop()


def test_kill_9_during_writes_leaves_only_whole_files(cluster, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster.filer.grpc_address, tmp_path, "-chunkSizeLimitMB=1")
    base = m.mnt / "kill9"
    base.mkdir()
    done: dict[str, bytes] = {}
    rng = random.Random(3)
    for i in range(6):
        data = rng.randbytes(rng.choice([10, 70_000, 2 * MIB + 3]))
        (base / f"done{i}.bin").write_bytes(data)
        done[f"done{i}.bin"] = data
    done_uploads = m.state()["writes"]["upload_bytes"]
    f = open(base / "partial.bin", "wb")  # noqa: SIM115 (the mount dies under it)
    f.write(rng.randbytes(3 * MIB))
    f.flush()
    # The kill lands mid-file: partial.bin's writer is open and chunks of it are already
    # on the volume servers, uncommitted (a commit now would name a torn file).
    deadline = time.monotonic() + 30
    while (w := m.state()["writes"])["upload_bytes"] - done_uploads < MIB:
        assert time.monotonic() < deadline, ("no chunk of partial.bin was uploaded", w)
        time.sleep(0.05)
    assert w["writers"] == 1, w
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(10)
    with contextlib.suppress(OSError):
        f.close()  # the flush cannot reach a dead mount
    m.stop()
    with Client(cluster.filer.grpc_address) as c:
        for name, data in done.items():
            assert c.read(f"/kill9/{name}") == data, name
        names = c.listdir("/kill9")
        if "partial.bin" in names:  # created at open, never committed: empty, not torn
            assert c.stat("/kill9/partial.bin")["size"] == 0
    shutil.rmtree(tmp_path / "mnt", ignore_errors=True)


def test_sidecar_stopped_during_mixed_reads_and_writes(cluster, tmp_path):  # type: ignore[no-untyped-def]
    """Writes and reads through the mount go on, right, when the sidecar dies midway.

    Proven on both sides of the kill: before it, reads came over the fast path and none
    over HTTP; the sidecar has exited; after it, reads came over HTTP after counted
    failures, and the files written after it are in the filer with their bytes."""
    sc = cluster.add_sidecar(cluster.volume_servers)
    m = _mount(cluster.filer.grpc_address, tmp_path, "-rdma.enabled",
               f"-rdma.sidecar={sc.address}", "-rdma.timeoutMs=1000", "-chunkSizeLimitMB=1")
    try:
        base = m.mnt / "mixed"
        base.mkdir()
        rng = random.Random(11)
        want: dict[str, bytes] = {}
        written_after_kill: set[str] = set()
        for i in range(4):
            want[f"r{i}"] = rng.randbytes(2 * MIB + i)
            (base / f"r{i}").write_bytes(want[f"r{i}"])
        for step in range(24):
            if step == 6:
                before = m.state()
                assert fast_bytes(before) > 0, before
                assert before["client"]["http"]["bytes"] == 0, before
                assert fast_failures(before) == 0, before
                sc.sigkill()
                assert sc.proc.poll() is not None
            name = f"w{step % 5}"
            data = rng.randbytes(rng.choice([4096, MIB + 7, 3 * MIB]))
            (base / name).write_bytes(data)  # acknowledged at close
            want[name] = data
            if step >= 6:
                written_after_kill.add(name)
            Path("/proc/sys/vm/drop_caches").write_text("3")
            for k in rng.sample(sorted(want), 3):
                assert (base / k).read_bytes() == want[k], (step, k)
        after = m.state()
        assert after["client"]["http"]["bytes"] > 0 and fast_failures(after) > 0, after
        assert after["writes"]["upload_failures"] == 0, after["writes"]
    finally:
        assert m.stop() == 0
        sc.kill()
    with Client(cluster.filer.grpc_address, meta_ttl=0) as c:
        for name in sorted(written_after_kill):
            assert c.read(f"/mixed/{name}") == want[name], name


def test_collection_and_replication_flags_reach_the_volumes(cluster, tmp_path):  # type: ignore[no-untyped-def]
    m = _mount(cluster.filer.grpc_address, tmp_path, "-collection=wcoll", "-replication=000")
    try:
        (m.mnt / "coll").mkdir(exist_ok=True)
        (m.mnt / "coll" / "c.bin").write_bytes(b"z" * 100_000)
    finally:
        assert m.stop() == 0
    r = httpx.get(f"{cluster.filer.url}/coll/c.bin", params={"metadata": "true"}, timeout=30)
    vids = {int(c["file_id"].split(",")[0]) for c in r.json()["chunks"]}
    files = {p.name for vs in cluster.volume_servers for p in vs.dir.glob("wcoll_*.dat")}
    assert vids and all(f"wcoll_{v}.dat" in files for v in vids), (vids, files)


def test_hard_links_share_content_with_weed_mount(wmount, cluster, tmp_path):  # type: ignore[no-untyped-def]
    d = wmount.mnt / "hardlinks"
    d.mkdir()
    data = random.Random(5).randbytes(2 * MIB + 11)
    (d / "a").write_bytes(data)
    os.link(d / "a", d / "b")
    assert (d / "b").read_bytes() == data and (d / "a").read_bytes() == data
    with weed_mount(cluster.filer, tmp_path) as wm:
        assert (wm / "hardlinks" / "b").read_bytes() == data
        assert sorted(os.listdir(wm / "hardlinks")) == ["a", "b"]
    with open(d / "a", "r+b") as f:  # a change through one name shows through the other
        f.seek(MIB)
        f.write(b"CHANGED" * 1000)
    data = data[:MIB] + b"CHANGED" * 1000 + data[MIB + 7000:]
    with Client(cluster.filer.grpc_address, meta_ttl=0) as c:
        assert c.read("/hardlinks/b") == data
    os.unlink(d / "a")
    assert os.listdir(d) == ["b"]
    with Client(cluster.filer.grpc_address, meta_ttl=0) as c:
        assert c.read("/hardlinks/b") == data
