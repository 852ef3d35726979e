"""An fsspec filesystem for SeaweedFS, registered as ``seaweedfs://``.

    fsspec.open("seaweedfs://127.0.0.1:8888/dir/file", "rb")
    fsspec.filesystem("seaweedfs", filer="127.0.0.1:8888", sidecar=":18515")

Reads go through ``seaweed_rdma.Client``, so the fast path and HTTP fallback apply to
every byte; the filesystem is read-only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from .extras import missing

try:
    from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
except ImportError as e:  # one line saying what to install, not a bare ModuleNotFoundError
    raise ImportError(f"seaweed_rdma.fsspec: {missing('fsspec')}") from e

from .client import Client
from .errors import NotFound
from .filer import Entry

PROTOCOL = "seaweedfs"


def _kind(entry: Entry) -> str:
    if entry.is_dir:
        return "directory"
    return "link" if entry.is_symlink else "file"


class SeaweedFileSystem(AbstractFileSystem):
    """Read-only fsspec filesystem over a SeaweedFS filer.

    ``filer`` is ``host:port`` (taken from the URL when opened by URL); ``sidecar``,
    ``transport``, ``master`` and ``jwt_key`` are passed to ``Client``.
    """

    protocol = (PROTOCOL,)
    root_marker = "/"

    def __init__(self, filer: str = "127.0.0.1:8888", sidecar: Any = None,
                 transport: str = "auto", master: str | None = None,
                 jwt_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filer = filer
        self.client = Client(filer, sidecar=sidecar, transport=transport, master=master,
                             jwt_key=jwt_key)

    # -- paths ---------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith(PROTOCOL + "://"):
            text = urlsplit(text).path or "/"
        text = "/" + text.lstrip("/")
        return text.rstrip("/") or "/"

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        if path.startswith(PROTOCOL + "://"):
            netloc = urlsplit(path).netloc
            if netloc:
                return {"filer": netloc}
        return {}

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self.filer}{self._strip_protocol(name)}"

    # -- metadata ---------------------------------------------------------------------

    def _details(self, entry: Entry) -> dict[str, Any]:
        return {"name": entry.path, "size": entry.file_size, "type": _kind(entry),
                "mtime": entry.mtime_ns / 1e9, "mode": entry.mode, "uid": entry.uid,
                "gid": entry.gid, "mime": entry.mime, "inode": entry.inode,
                "destination": entry.symlink_target or None}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        entry = self.client.entry(path)
        entries = [entry] if not entry.is_dir else self.client.scandir(path)
        for e in entries:
            self.client.remember(e)
        out = [self._details(e) for e in entries]
        return out if detail else [d["name"] for d in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        try:
            return self._details(self.client.entry(path))
        except NotFound:
            raise FileNotFoundError(path) from None

    # -- data -------------------------------------------------------------------------

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        if start is None and end is None:
            return self.client.read(path)
        size = self.info(path)["size"]
        start = 0 if start is None else (max(0, size + start) if start < 0 else start)
        end = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
        if end <= start:
            return b""
        return self.client.read(path, start, end - start)

    def cat_ranges(self, paths: list[str], starts: list[int] | int, ends: list[int] | int,
                   max_gap: int | None = None, on_error: str = "return", **kwargs: Any
                   ) -> list[Any]:
        """Many ranges at once, read concurrently (pyarrow asks for column chunks so)."""
        n = len(paths)
        starts = starts if isinstance(starts, list) else [starts] * n
        ends = ends if isinstance(ends, list) else [ends] * n
        if not len(starts) == len(ends) == n:
            raise ValueError("paths, starts and ends must have the same length")

        def one(i: int) -> Any:
            try:
                return self.cat_file(paths[i], starts[i], ends[i])
            except Exception as e:
                if on_error == "raise":
                    raise
                return e

        with ThreadPoolExecutor(max_workers=min(16, max(1, n))) as pool:
            return list(pool.map(one, range(n)))

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> SeaweedBufferedFile:
        if mode != "rb":
            raise NotImplementedError("seaweedfs:// is read-only: open with mode 'rb'")
        return SeaweedBufferedFile(self, path, mode=mode,
                                   block_size=block_size or 4 << 20,
                                   cache_options=cache_options, **kwargs)


class SeaweedBufferedFile(AbstractBufferedFile):
    """fsspec's buffered file whose ranges come through ``Client``."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: SeaweedFileSystem = self.fs
        return fs.client.read(self.path, start, max(0, end - start))
