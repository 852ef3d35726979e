"""An fsspec filesystem for SeaweedFS, registered as ``seaweedfs://``.

    fsspec.open("seaweedfs://127.0.0.1:8888/dir/file", "rb")
    fsspec.filesystem("seaweedfs", filer="127.0.0.1:8888", sidecar=":18515")

Reads go through ``seaweed_rdma.Client``, so the fast path and HTTP fallback apply to
every byte. Writes (``open(..., "wb")``, ``pipe``, ``put``, ``rm``, ``mv``, ``mkdir``) go
through the filer's HTTP API, which cuts files into chunks of ``chunk_mb`` MiB as
``weed upload`` does; a file opened for writing is spooled locally (in memory up to 64 MiB,
then on disk) and stored when it is closed, so readers see the old version or the new one.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any
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
    """fsspec filesystem over a SeaweedFS filer.

    ``filer`` is ``host:port`` (taken from the URL when opened by URL); ``sidecar``,
    ``transport``, ``master`` and ``jwt_key`` are passed to ``Client``; ``chunk_mb`` is the
    chunk size of files written.
    """

    protocol = (PROTOCOL,)
    root_marker = "/"

    def __init__(self, filer: str = "127.0.0.1:8888", sidecar: Any = None,
                 transport: str = "auto", master: str | None = None,
                 jwt_key: str | None = None, chunk_mb: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if chunk_mb < 1:
            raise ValueError(f"chunk_mb must be >= 1, not {chunk_mb}")
        self.filer = filer
        self.chunk_mb = chunk_mb
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

    def cat(self, path: Any, recursive: bool = False, on_error: str = "raise",
            **kwargs: Any) -> Any:
        """As fsspec's ``cat``; many paths are read in one batch (``Client.read_many``)."""
        paths = self.expand_path(path, recursive=recursive, **kwargs)
        if not (len(paths) > 1 or isinstance(path, list)
                or paths[0] != self._strip_protocol(path)):
            return self.cat_file(paths[0], **kwargs)
        out: dict[str, Any] = {}
        for p, got in zip(paths, self.client.read_many(paths)):
            if isinstance(got, BaseException):
                if on_error == "raise":
                    raise got
                if on_error == "return":
                    out[p] = got
            else:
                out[p] = got
        return out

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
              **kwargs: Any) -> AbstractBufferedFile:
        if mode == "wb":
            return SeaweedWriteFile(self, path, mode=mode, block_size=block_size or 4 << 20,
                                    autocommit=autocommit)
        if mode != "rb":
            raise NotImplementedError(f"seaweedfs:// opens files with mode 'rb' or 'wb', "
                                      f"not {mode!r}")
        return SeaweedBufferedFile(self, path, mode=mode,
                                   block_size=block_size or 4 << 20,
                                   cache_options=cache_options, **kwargs)

    # -- writes -------------------------------------------------------------------------

    def _changed(self, *paths: str) -> None:
        for p in paths:
            self.client.invalidate(p)

    def store(self, path: str, data: bytes | IO[bytes]) -> None:
        """Writes ``data`` (bytes or a binary file object) to ``path`` in one go."""
        path = self._strip_protocol(path)
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self.client.filer.put(path, data, max_mb=self.chunk_mb, mime=mime)
        self._changed(path)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite",
                  **kwargs: Any) -> None:
        self.store(path, value)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        with open(lpath, "rb") as f:
            self.store(rpath, f)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self.client.filer.mkdir(path)
        self._changed(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        try:
            self.mkdir(path)
        except FileExistsError:
            if not exist_ok:
                raise

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        self.client.filer.delete(path)
        self._changed(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        for p in path if isinstance(path, list) else [path]:
            p = self._strip_protocol(p)
            self.client.filer.delete(p, recursive=recursive)
            self._changed(p)

    def rmdir(self, path: str) -> None:
        self.rm(path)

    def mv(self, path1: str, path2: str, recursive: bool = False,
           maxdepth: int | None = None, **kwargs: Any) -> None:
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        self.client.filer.rename(src, dst)
        self._changed(src, dst)


class SeaweedWriteFile(AbstractBufferedFile):
    """A file being written: spooled here, stored (chunked by the filer) on close."""

    def _initiate_upload(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115

    def _upload_chunk(self, final: bool = False) -> bool:
        self.buffer.seek(0)
        shutil.copyfileobj(self.buffer, self._spool)
        if final:
            self._spool.seek(0)
            try:
                self.fs.store(self.path, self._spool)
            finally:
                self._spool.close()
        return True

    def discard(self) -> None:
        spool = getattr(self, "_spool", None)
        if spool is not None:
            spool.close()


class SeaweedBufferedFile(AbstractBufferedFile):
    """fsspec's buffered file whose ranges come through ``Client``.

    Small reads go through fsspec's readahead cache; a read of a block or more (pyarrow's
    coalesced column chunks, ``read()`` of a whole file) is one ``Client.read`` of exactly
    what was asked: the cache would fetch a block more and then copy the answer out into
    fresh memory, which in a new process costs as much as the read.
    """

    def read(self, length: int = -1) -> bytes:
        want = self.size - self.loc if length is None or length < 0 else int(length)
        want = min(want, self.size - self.loc)
        if self.mode != "rb" or self.closed or want < self.blocksize:
            return super().read(length)  # type: ignore[no-any-return]
        fs: SeaweedFileSystem = self.fs
        out = fs.client.read(self.path, self.loc, want)
        self.loc += len(out)
        return out

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: SeaweedFileSystem = self.fs
        return fs.client.read(self.path, start, max(0, end - start))
