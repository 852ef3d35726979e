"""``seaweed_rdma.data`` on a real cluster: the datasets' paths, items and batches, in
worker processes started by fork and spawn, and under torch's DataLoader where installed."""

from __future__ import annotations

import hashlib
import multiprocessing

import pytest

from seaweed_rdma import Client
from seaweed_rdma.data import SeaweedDataset, SeaweedIterableDataset

from .workers import dataset_batch, iterate, make_files

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def tree(cluster):  # type: ignore[no-untyped-def]
    files = make_files(cluster, "/data/train", 24, seed=7)
    files |= make_files(cluster, "/data/train/sub", 3, seed=8)
    cluster.upload("/data/train/notes.txt", b"not an image")
    return files


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_paths_from_a_directory_a_glob_and_a_list(cluster, tree):  # type: ignore[no-untyped-def]
    with Client(cluster.filer.grpc_address) as c:
        flat = SeaweedDataset(c, "/data/train")
        assert len(flat) == 25 and "/data/train/notes.txt" in flat.paths
        assert len(SeaweedDataset(c, "/data/train", recursive=True)) == 28
        globbed = SeaweedDataset(c, "/data/train/*.bin")
        assert globbed.paths == sorted(p for p in tree if p.count("/") == 3)
        listed = SeaweedDataset(c, ["/data/train/notes.txt"])
        assert listed[0] == b"not an image"
        with pytest.raises(ValueError, match="last path component"):
            SeaweedDataset(c, "/data/*/x.bin")


def test_items_batches_and_transform(cluster, sidecars, tree):  # type: ignore[no-untyped-def]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        ds = SeaweedDataset(c, "/data/train/*.bin", transform=_md5)
        assert [ds[i] for i in range(len(ds))] == [tree[p] for p in ds.paths]
        assert ds.__getitems__([5, 0, 5]) == [tree[ds.paths[i]] for i in (5, 0, 5)]
        assert c.stats()["fast"]["bytes"] > 0 and c.stats()["http"]["bytes"] == 0
        it = SeaweedIterableDataset(c, "/data/train/*.bin", transform=_md5, batch=5)
        assert list(it) == [tree[p] for p in it.paths]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_datasets_in_worker_processes(cluster, sidecars, tree, method):  # type: ignore[no-untyped-def]
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        ds = SeaweedDataset(c, "/data/train/*.bin", transform=_md5)
        ds[0]  # used before the workers start, as a DataLoader's dataset is
        batches = [list(range(i, len(ds), 3)) for i in range(3)]
        with multiprocessing.get_context(method).Pool(3) as pool:
            got = pool.map(dataset_batch, [(ds, b) for b in batches])
            whole = pool.map(iterate, [SeaweedIterableDataset(c, "/data/train/*.bin",
                                                              transform=_md5)])
        for b, items in zip(batches, got, strict=True):
            assert items == [tree[ds.paths[i]] for i in b]
        assert whole[0] == [tree[p] for p in ds.paths]


def test_under_torch_dataloader(cluster, sidecars, tree):  # type: ignore[no-untyped-def]
    torch_data = pytest.importorskip("torch.utils.data", reason="torch is not installed")
    with Client(cluster.filer.grpc_address, sidecar=sidecars, transport="tcp") as c:
        ds = SeaweedDataset(c, "/data/train/*.bin", transform=_md5)
        loader = torch_data.DataLoader(ds, batch_size=4, num_workers=2,
                                       collate_fn=lambda items: items)
        assert sorted(x for batch in loader for x in batch) == sorted(
            tree[p] for p in ds.paths)
        it = SeaweedIterableDataset(c, "/data/train/*.bin", transform=_md5)
        loader = torch_data.DataLoader(it, batch_size=None, num_workers=2)
        assert sorted(loader) == sorted(tree[p] for p in ds.paths)
