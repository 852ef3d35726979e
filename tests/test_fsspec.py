"""The fsspec filesystem against the real cluster: URLs, ranges, listing helpers and pyarrow."""

from __future__ import annotations

import io

import fsspec
import pytest

from seaweed_rdma.fsspec import SeaweedFileSystem

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def fs(cluster, shapes, sidecars):  # type: ignore[no-untyped-def]
    fs = fsspec.filesystem("seaweedfs", filer=cluster.filer.grpc_address, sidecar=sidecars,
                           transport="tcp", skip_instance_cache=True)
    yield fs
    fs.client.close()


def test_registered_under_its_protocol():  # type: ignore[no-untyped-def]
    assert fsspec.get_filesystem_class("seaweedfs") is SeaweedFileSystem


def test_open_by_url(cluster, shapes, sidecars):  # type: ignore[no-untyped-def]
    s = shapes["multi_chunk"]
    # host:port.grpcPort, since the test filer's gRPC port is not port + 10000
    url = f"seaweedfs://{cluster.filer.grpc_address}{s.path}"
    with fsspec.open(url, "rb") as f:
        assert f.read() == s.data
    with fsspec.open(url, "rb", sidecar=cluster.sidecar_map(), transport="tcp") as f:
        f.seek(1_000_000)
        assert f.read(5000) == s.data[1_000_000:1_005_000]
        stats = f.fs.client.stats()
        assert stats["fast"]["bytes"] > 0 and stats["http"]["bytes"] == 0


def test_cat_file_and_ranges(fs, shapes):  # type: ignore[no-untyped-def]
    s = shapes["compressed_text"]
    assert fs.cat_file(s.path) == s.data
    assert fs.cat_file(s.path, 10, 100) == s.data[10:100]
    assert fs.cat_file(s.path, -50) == s.data[-50:]
    m = shapes["overlapping"] if "overlapping" in shapes else shapes["multi_chunk"]
    starts = [0, 5, 1_000_000, len(m.data) - 10]
    ends = [10, 4096, 2_100_000, len(m.data)]
    got = fs.cat_ranges([m.path] * 4, starts, ends)
    assert got == [m.data[a:b] for a, b in zip(starts, ends, strict=True)]


def test_ls_info_glob_find_walk(fs, shapes):  # type: ignore[no-untyped-def]
    names = fs.ls("/shapes", detail=False)
    assert "/shapes/multi.bin" in names
    info = fs.info("/shapes/multi.bin")
    assert info["type"] == "file" and info["size"] == len(shapes["multi_chunk"].data)
    assert fs.info("/shapes/a")["type"] == "directory"
    assert "/shapes/boundary-1048576.bin" in fs.glob("/shapes/boundary-*.bin")
    assert "/shapes/a/b/c/ünï cödé 文件.bin" in fs.find("/shapes")
    walked = {root: files for root, _, files in fs.walk("/shapes/a")}
    assert walked["/shapes/a/b/c"] == ["ünï cödé 文件.bin"]
    with pytest.raises(FileNotFoundError):
        fs.info("/shapes/nope")
    with pytest.raises(NotImplementedError):
        fs.open("/shapes/new.bin", "ab")


def test_pyarrow_reads_parquet(fs, cluster):  # type: ignore[no-untyped-def]
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": list(range(50_000)),
                      "name": [f"row-{i}" for i in range(50_000)],
                      "value": [i * 0.5 for i in range(50_000)]})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=10_000)
    cluster.upload("/data/table.parquet", sink.getvalue(), max_mb=1)
    back = pq.read_table("/data/table.parquet", filesystem=fs)
    assert back.equals(table)
    cols = pq.read_table("/data/table.parquet", filesystem=fs, columns=["value"])
    assert cols.column("value").to_pylist() == table.column("value").to_pylist()


def test_a_large_read_is_one_exact_request(cluster, shapes, sidecars):  # type: ignore[no-untyped-def]
    """A read of a block or more skips fsspec's readahead: exactly the asked bytes move
    (the cache would have fetched a block beyond them), all over the fast path."""
    s = shapes["multi_chunk"]
    fs = SeaweedFileSystem(filer=cluster.filer.grpc_address, sidecar=sidecars,
                           transport="tcp", skip_instance_cache=True)
    try:
        with fs.open(s.path, "rb", block_size=1 << 20) as f:
            f.seek(123)
            assert f.read(3 << 20) == s.data[123:123 + (3 << 20)]
            moved = fs.client.stats()["fast"]["bytes"]
            assert moved == 3 << 20, moved
            assert f.tell() == 123 + (3 << 20)
            assert f.read() == s.data[123 + (3 << 20):]  # the rest, also past the cache
            assert f.read(10) == b"" and f.tell() == len(s.data)
            f.seek(5)
            assert f.read(100) == s.data[5:105]  # small reads still use the cache
        assert fs.client.stats()["http"]["bytes"] == 0
    finally:
        fs.client.close()
