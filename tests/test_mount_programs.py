"""Real programs on the mount (issue 24): git init/commit/clone, tar extract, rsync -a with
hard links, sqlite3 in WAL mode. Every tree is compared with the same work done on a
local directory, byte for byte, and again through a fresh ``weed mount`` of the filer."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import FUSE_OK, weed_mount
from .mounts import Mount

pytestmark = [pytest.mark.cluster, pytest.mark.fuse,
              pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")]


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool} (ci/install.sh installs it)")


@pytest.fixture(scope="module")
def mnt(cluster, tmp_path_factory) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    where = tmp_path_factory.mktemp("programs")
    (where / "m").mkdir()
    m = Mount([f"-filer={cluster.filer.grpc_address}"], where / "m", where / "m.log")
    try:
        yield m.mnt
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """``{relative path: (kind, permission bits, sha256 or link target, hard-link group)}``."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                group = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else ""
                out[rel] = ("file", stat.S_IMODE(st.st_mode),
                            hashlib.sha256(p.read_bytes()).hexdigest(), st.st_nlink, group)
    return out


def _through_weed(cluster, tmp_path: Path, rel: str) -> dict[str, tuple[object, ...]]:  # type: ignore[no-untyped-def]
    with weed_mount(cluster.filer, tmp_path / "fresh-weed") as w:
        return _tree(w / rel)


def _make_source(root: Path, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 17}" / f"e{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(rng.randbytes(rng.choice((0, 100, 3000, 70_000))))
        os.chmod(d / f"f{i}.txt", rng.choice((0o644, 0o600, 0o755)))
    os.symlink("d0/e0/f0.txt", root / "ln")
    os.link(root / "d1" / "e1" / "f1.txt", root / "hard1")
    os.link(root / "d1" / "e1" / "f1.txt", root / "d2" / "hard2")


def test_tar_extract_and_compare(mnt: Path, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    _make_source(src, 2000)
    ball = tmp_path / "t.tar"
    with tarfile.open(ball, "w") as t:
        t.add(src, arcname="src")
    local = tmp_path / "local"
    local.mkdir()
    subprocess.run(["tar", "-xpf", str(ball), "-C", str(local)], check=True)
    (mnt / "tar").mkdir()
    subprocess.run(["tar", "-xpf", str(ball), "-C", str(mnt / "tar")], check=True)
    want = _tree(local / "src")
    assert _tree(mnt / "tar" / "src") == want
    assert _through_weed(cluster, tmp_path, "tar/src") == want


def test_rsync_with_hard_links(mnt: Path, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _needs("rsync")
    src = tmp_path / "src"
    _make_source(src, 300, seed=11)
    subprocess.run(["rsync", "-aH", f"{src}/", f"{mnt / 'rsync'}/"], check=True)
    want = _tree(src)
    assert _tree(mnt / "rsync") == want
    # a second run finds nothing to do and changes nothing
    out = subprocess.run(["rsync", "-aHi", f"{src}/", f"{mnt / 'rsync'}/"], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "", out
    assert _through_weed(cluster, tmp_path, "rsync") == want


def test_git_init_commit_clone(mnt: Path, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _needs("git")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}

    def git(*args: str, cwd: Path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                              capture_output=True, text=True).stdout

    repo = mnt / "git" / "repo"
    repo.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    _make_source(repo / "tree", 200, seed=3)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    (repo / "tree" / "d0" / "e0" / "f0.txt").write_bytes(b"changed\n")
    os.unlink(repo / "tree" / "d3" / "e3" / "f3.txt")
    git("commit", "-qam", "two", cwd=repo)
    git("gc", "-q", cwd=repo)
    assert git("fsck", "--strict", cwd=repo) == ""
    git("clone", "-q", str(repo), str(mnt / "git" / "clone"), cwd=mnt)
    local = tmp_path / "clone"
    git("clone", "-q", str(repo), str(local), cwd=tmp_path)
    assert git("log", "--format=%H", cwd=mnt / "git" / "clone") == \
        git("log", "--format=%H", cwd=local)
    ignore = {".git"}
    want = {k: v for k, v in _tree(local).items() if k.split("/")[0] not in ignore}
    got = {k: v for k, v in _tree(mnt / "git" / "clone").items() if k.split("/")[0] not in ignore}
    assert got == want
    weed = _through_weed(cluster, tmp_path, "git/clone")
    assert {k: v for k, v in weed.items() if k.split("/")[0] not in ignore} == want


def test_sqlite_wal(mnt: Path, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = mnt / "sqlite"
    path.mkdir()
    db = sqlite3.connect(path / "t.db")
    assert db.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
    db.execute("create table t (i integer primary key, v blob)")
    rng = random.Random(5)
    rows = []
    for batch in range(20):
        chunk = [(batch * 100 + i, rng.randbytes(rng.randrange(10, 3000))) for i in range(100)]
        with db:
            db.executemany("insert into t values (?, ?)", chunk)
        rows += chunk
    with db:
        db.execute("delete from t where i % 7 = 0")
    rows = [r for r in rows if r[0] % 7]
    db.execute("pragma wal_checkpoint(truncate)")
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.close()
    db = sqlite3.connect(path / "t.db")
    assert db.execute("select i, v from t order by i").fetchall() == rows
    db.close()
    with weed_mount(cluster.filer, tmp_path / "fresh-weed") as w:
        copy = tmp_path / "copy.db"
        shutil.copy(w / "sqlite" / "t.db", copy)
    db = sqlite3.connect(copy)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select i, v from t order by i").fetchall() == rows
    db.close()
