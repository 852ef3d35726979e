"""Writes through ``seaweedfs://`` against the real cluster: open("wb"), pipe, put, mkdir,
mv, rm; files chunked by the filer; pandas and pyarrow writing and reading back; every
file read back byte-exact through our Client and through ``weed mount``."""

from __future__ import annotations

import random
from pathlib import Path

import fsspec
import pytest

from seaweed_rdma import Client

from .conftest import FUSE_OK, weed_mount

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def fs(cluster, sidecars):  # type: ignore[no-untyped-def]
    fs = fsspec.filesystem("seaweedfs", filer=cluster.filer.grpc_address, sidecar=sidecars,
                           transport="tcp", chunk_mb=1, skip_instance_cache=True)
    yield fs
    fs.client.close()


def test_open_wb_pipe_put_mkdir_mv_rm(cluster, fs, tmp_path: Path):  # type: ignore[no-untyped-def]
    data = random.Random(9).randbytes(3 * (1 << 20) + 777)
    with fs.open("/w/a/big.bin", "wb") as f:
        for at in range(0, len(data), 100_000):
            f.write(data[at:at + 100_000])
    assert fs.cat_file("/w/a/big.bin") == data
    with Client(cluster.filer.grpc_address) as c:
        assert len(c.entry("/w/a/big.bin").chunks) >= 4, "chunked at chunk_mb=1"
    fs.pipe_file("/w/a/small.txt", b"small text\n" * 100)
    assert fs.cat("/w/a/small.txt") == b"small text\n" * 100
    (tmp_path / "tree" / "d").mkdir(parents=True)
    (tmp_path / "tree" / "d" / "x.bin").write_bytes(b"x" * 5000)
    fs.put(str(tmp_path / "tree"), "/w/tree", recursive=True)
    assert fs.cat_file("/w/tree/d/x.bin") == b"x" * 5000
    fs.mkdir("/w/empty/dir")
    assert fs.isdir("/w/empty/dir")
    with pytest.raises(FileExistsError):
        fs.makedirs("/w/empty/dir")
    fs.makedirs("/w/empty/dir", exist_ok=True)
    fs.mv("/w/a/small.txt", "/w/a/moved.txt")
    assert not fs.exists("/w/a/small.txt")
    assert fs.cat_file("/w/a/moved.txt") == b"small text\n" * 100
    fs.rm("/w/a/moved.txt")
    assert not fs.exists("/w/a/moved.txt")
    fs.rm("/w/tree", recursive=True)
    assert not fs.exists("/w/tree/d/x.bin")
    with pytest.raises(NotImplementedError, match="'rb' or 'wb'"):
        fs.open("/w/a/big.bin", "ab")
    if FUSE_OK:
        with weed_mount(cluster.filer, tmp_path / "wm") as mnt:
            assert (mnt / "w/a/big.bin").read_bytes() == data


def test_pandas_parquet_and_csv_round_trip(cluster, fs, tmp_path: Path):  # type: ignore[no-untyped-def]
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    df = pd.DataFrame({"id": range(200_000), "group": [i % 7 for i in range(200_000)],
                       "value": [float(i) * 0.5 for i in range(200_000)]})
    url = f"seaweedfs://{cluster.filer.grpc_address}/w/pd/table.parquet"
    opts = {"sidecar": cluster.sidecar_map(), "transport": "tcp", "chunk_mb": 1}
    df.to_parquet(url, storage_options=opts, row_group_size=50_000)
    pd.testing.assert_frame_equal(pd.read_parquet(url, storage_options=opts), df)
    one = pd.read_parquet(url, columns=["value"], storage_options=opts)
    pd.testing.assert_frame_equal(one, df[["value"]])
    table = pq.read_table("/w/pd/table.parquet", filesystem=fs, filters=[("group", "=", 3)])
    assert table.num_rows == (df["group"] == 3).sum()
    csv = f"seaweedfs://{cluster.filer.grpc_address}/w/pd/table.csv"
    df.head(1000).to_csv(csv, index=False, storage_options=opts)
    pd.testing.assert_frame_equal(pd.read_csv(csv, storage_options=opts), df.head(1000))
    raw = fs.cat_file("/w/pd/table.parquet")
    if FUSE_OK:
        with weed_mount(cluster.filer, tmp_path / "wm") as mnt:
            assert (mnt / "w/pd/table.parquet").read_bytes() == raw
            pd.testing.assert_frame_equal(pd.read_parquet(mnt / "w/pd/table.parquet"), df)
