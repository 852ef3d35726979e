"""Byte-exact reads over plain HTTP, for every file shape a real cluster makes."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

import httpx
import pytest

import seaweed_rdma
from seaweed_rdma import Client
from seaweed_rdma.filer import FilerClient

from .conftest import Shape, clients_per_filer, shape_or_skip

pytestmark = pytest.mark.cluster

SHAPE_KEYS = [
    "empty", "one_byte", "boundary_1048575", "boundary_1048576", "boundary_1048577",
    "multi_chunk", "compressed_text", "encrypted", "encrypted_text", "inline", "collection",
    "nested_unicode", "appended", "overlapping", "sparse",
]


@pytest.fixture(scope="module")
def clients(shapes: dict[str, Shape]):  # type: ignore[no-untyped-def]
    with clients_per_filer(shapes) as made:
        yield made


@pytest.mark.parametrize("key", SHAPE_KEYS)
def test_whole_file(shapes, clients, key):  # type: ignore[no-untyped-def]
    s = shape_or_skip(shapes, key)
    c = clients[s.filer]
    assert c.read(s.path) == s.data
    assert c.stat(s.path)["size"] == len(s.data)


@pytest.mark.parametrize("key", SHAPE_KEYS)
def test_random_ranges(shapes, clients, key):  # type: ignore[no-untyped-def]
    s = shape_or_skip(shapes, key)
    c = clients[s.filer]
    rng = random.Random(key)
    n = len(s.data)
    for _ in range(25):
        off = rng.randrange(0, n + 10)
        size = rng.choice([1, 7, 4096, 65536, 1 << 20, 3 << 20])
        assert c.read(s.path, off, size) == s.data[off:off + size], (off, size)
        buf = bytearray(size)
        got = c.readinto(s.path, buf, off)
        assert got == len(s.data[off:off + size])
        assert bytes(buf[:got]) == s.data[off:off + size]


@pytest.mark.parametrize("key", ["multi_chunk", "compressed_text", "overlapping", "sparse"])
def test_file_object_seek_and_read(shapes, clients, key):  # type: ignore[no-untyped-def]
    s = shape_or_skip(shapes, key)
    rng = random.Random(key + "f")
    with clients[s.filer].open(s.path) as f:
        assert f.seekable()
        for _ in range(20):
            off = rng.randrange(0, len(s.data))
            f.seek(off)
            size = rng.randrange(1, 300_000)
            assert f.read(size) == s.data[off:off + size]
            assert f.tell() == min(len(s.data), off + size)
        f.seek(-10, 2)
        assert f.read() == s.data[-10:]


def test_overlapping_shape_really_overlaps(shapes, clients):  # type: ignore[no-untyped-def]
    s = shape_or_skip(shapes, "overlapping")
    chunks = clients[s.filer].entry(s.path).chunks
    spans = sorted((c.offset, c.offset + c.size) for c in chunks)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "weed mount made no overlap"


def test_shapes_have_expected_storage(shapes, clients):  # type: ignore[no-untyped-def]
    """The fixtures make what they claim: compressed, encrypted, inline, appended chunks."""
    def entry(key: str):  # type: ignore[no-untyped-def]
        s = shapes[key]
        return clients[s.filer].entry(s.path)

    assert all(c.is_compressed for c in entry("compressed_text").chunks)
    assert all(c.cipher_key for c in entry("encrypted").chunks)
    assert entry("inline").content is not None and not entry("inline").chunks
    assert len(entry("multi_chunk").chunks) == 6
    assert len(entry("appended").chunks) > 1


def test_listdir_and_stat(shapes, clients, cluster):  # type: ignore[no-untyped-def]
    c = clients[cluster.filer.grpc_address]
    names = c.listdir("/shapes")
    assert "multi.bin" in names and "a" in names
    assert c.listdir("/shapes/a/b/c") == ["ünï cödé 文件.bin"]
    st = c.stat("/shapes/a")
    assert st["type"] == "directory"
    if "overlapping" in shapes:
        link = c.stat("/shapes/link-to-multi")
        assert link["type"] == "symlink" and link["symlink_target"] == "multi.bin"


def test_listing_paginates(cluster):  # type: ignore[no-untyped-def]
    for i in range(25):
        cluster.upload(f"/paged/f{i:03d}", b"x" * i)
    want = [f"f{i:03d}" for i in range(25)]
    with httpx.Client() as http:
        small_pages = FilerClient(cluster.filer.grpc_address, http, page_size=7)
        assert [e.name for e in small_pages.iter_dir("/paged")] == want
    with Client(cluster.filer.grpc_address) as c:
        assert c.listdir("/paged") == want


def test_cli_cat_everyshape_or_skip(shapes, tmp_path):  # type: ignore[no-untyped-def]
    for s in shapes.values():
        out = subprocess.run(
            [sys.executable, "-m", "seaweed_rdma.cli", "cat", "--filer", s.filer, s.path],
            capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout == s.data, s.note


def test_cli_ls_and_stat(cluster, shapes):  # type: ignore[no-untyped-def]
    f = cluster.filer.grpc_address
    out = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "ls", "--filer", f,
                          "/shapes"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "multi.bin" in out.stdout.splitlines()
    out = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "stat", "--filer", f,
                          "/shapes/multi.bin"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"size": 5247201' in out.stdout


def test_version_is_exposed():  # type: ignore[no-untyped-def]
    assert seaweed_rdma.__version__ == "0.1.0"
