"""Datasets over files in SeaweedFS, in the shape PyTorch's ``DataLoader`` takes, without
needing torch:

    from seaweed_rdma.data import SeaweedDataset
    ds = SeaweedDataset(client, "/datasets/train/*.jpg", transform=decode)
    len(ds), ds[0], ds.__getitems__([3, 1, 4])   # the last reads in one batch

``SeaweedDataset`` is map-style (``__len__``, ``__getitem__``, and ``__getitems__``, which
``DataLoader`` calls for a whole batch and which reads it with ``Client.read_many``).
``SeaweedIterableDataset`` yields items in order, each worker process taking its share
(a subclass of torch's ``IterableDataset`` when torch is installed, so that ``DataLoader``
treats it as one). Both pickle as their paths and the client's configuration, so they work
in ``DataLoader`` workers started by fork or spawn.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .client import Client
from .filer import normalize_path

try:  # DataLoader tells iterable datasets apart by this base class
    from torch.utils.data import IterableDataset as _IterableBase
except ImportError:  # torch is optional
    _IterableBase = object  # type: ignore[assignment,misc]

Transform = Callable[[bytes], Any]
_MAGIC = set("*?[")


def _client(client: Client | str, kwargs: dict[str, Any]) -> Client:
    return client if isinstance(client, Client) else Client(client, **kwargs)


def resolve_paths(client: Client, source: str | Sequence[str],
                  recursive: bool = False) -> list[str]:
    """The files ``source`` names: a list of paths (kept as given), a directory (its files,
    sorted; with ``recursive``, those of its subdirectories too) or a glob (``*``, ``?``
    and ``[...]`` in the last component)."""
    if not isinstance(source, str):
        return [normalize_path(p) for p in source]
    path = normalize_path(source)
    if _MAGIC & set(path):
        directory, _, pattern = path.rpartition("/")
        if _MAGIC & set(directory):
            raise ValueError(f"{source!r}: a glob may only be in the last path component")
        return sorted(e.path for e in client.scandir(directory or "/")
                      if not e.is_dir and fnmatch.fnmatchcase(e.name, pattern))
    out: list[str] = []
    todo = [path]
    while todo:
        for e in client.scandir(todo.pop()):
            if not e.is_dir:
                out.append(e.path)
            elif recursive:
                todo.append(e.path)
    return sorted(out)


class SeaweedDataset:
    """Map-style: item ``i`` is the bytes of the ``i``-th file (``transform``-ed, if given).

    ``client`` is a ``Client`` or a filer address (then ``client_kwargs`` make the client).
    """

    def __init__(self, client: Client | str, source: str | Sequence[str],
                 transform: Transform | None = None, recursive: bool = False,
                 **client_kwargs: Any) -> None:
        self.client = _client(client, client_kwargs)
        self.paths = resolve_paths(self.client, source, recursive)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        data = self.client.read(self.paths[index])
        return data if self.transform is None else self.transform(data)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A batch of items, read together (``Client.read_many``)."""
        got = self.client.read_many([self.paths[i] for i in indices], on_error="raise")
        if self.transform is None:
            return got
        return [self.transform(d) for d in got]  # type: ignore[arg-type]


def _worker_share() -> tuple[int, int]:
    """(this worker's id, the number of workers) in a DataLoader, else (0, 1)."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:
        return 0, 1
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class SeaweedIterableDataset(_IterableBase):  # type: ignore[misc,valid-type]
    """Iterable: yields every file's bytes (``transform``-ed, if given) in order, read in
    batches of ``batch`` files; in DataLoader workers each worker yields every
    ``num_workers``-th file, so the workers together yield each file once."""

    def __init__(self, client: Client | str, source: str | Sequence[str],
                 transform: Transform | None = None, recursive: bool = False,
                 batch: int = 64, **client_kwargs: Any) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, not {batch}")
        self.client = _client(client, client_kwargs)
        self.paths = resolve_paths(self.client, source, recursive)
        self.transform = transform
        self.batch = batch

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Any]:
        worker, workers = _worker_share()
        mine = self.paths[worker::workers]
        for at in range(0, len(mine), self.batch):
            for data in self.client.read_many(mine[at:at + self.batch], on_error="raise"):
                yield data if self.transform is None else self.transform(data)  # type: ignore[arg-type]
