"""Filer client (HTTP API): entries by path, paginated listings, inline content."""

from __future__ import annotations

import base64
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from urllib.parse import quote

import httpx

from .addresses import http_base
from .errors import AlreadyExists, NotADirectory, NotFound, ServerError, Unreachable

# Go's os.FileMode keeps the file type in high bits; SeaweedFS stores those as they are.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_NAMED_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_DEVICE = 1 << 26
_GO_CHAR_DEVICE = 1 << 21
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_STICKY = 1 << 20


def go_mode_to_posix(mode: int) -> int:
    """Converts a Go ``os.FileMode`` value into a POSIX ``st_mode``."""
    perm = mode & 0o777
    if mode & _GO_SETUID:
        perm |= stat_mod.S_ISUID
    if mode & _GO_SETGID:
        perm |= stat_mod.S_ISGID
    if mode & _GO_STICKY:
        perm |= stat_mod.S_ISVTX
    if mode & _GO_DIR:
        kind = stat_mod.S_IFDIR
    elif mode & _GO_SYMLINK:
        kind = stat_mod.S_IFLNK
    elif mode & _GO_NAMED_PIPE:
        kind = stat_mod.S_IFIFO
    elif mode & _GO_SOCKET:
        kind = stat_mod.S_IFSOCK
    elif mode & _GO_CHAR_DEVICE:  # weed mount stores a char device with this bit alone
        kind = stat_mod.S_IFCHR
    elif mode & _GO_DEVICE:
        kind = stat_mod.S_IFBLK
    else:
        kind = stat_mod.S_IFREG
    return kind | perm


def _time_ns(text: str | None) -> int:
    if not text or text.startswith("0001-01-01"):
        return 0
    # Go prints up to nanoseconds; datetime keeps microseconds, so split the fraction off.
    main, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(main + "+00:00")
    digits = "".join(ch for ch in frac if ch.isdigit())[:9].ljust(9, "0")
    return int(base.timestamp()) * 1_000_000_000 + int(digits)


@dataclass(frozen=True)
class Chunk:
    """One ``FileChunk`` of an entry."""

    file_id: str
    offset: int
    size: int
    modified_ts_ns: int
    e_tag: str = ""
    cipher_key: bytes = b""
    is_compressed: bool = False
    is_chunk_manifest: bool = False

    @property
    def volume_id(self) -> int:
        """The volume id part of the file id."""
        return int(self.file_id.split(",", 1)[0])

    @property
    def whole(self) -> bool:
        """Compressed and encrypted chunks can only be read whole and then decoded."""
        return self.is_compressed or bool(self.cipher_key)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Chunk:
        """From the filer's JSON (``?metadata=true``) or a decoded manifest dict."""
        fid = d.get("file_id") or ""
        if not fid and d.get("fid"):
            from ._core import format_fid

            f = d["fid"]
            fid = format_fid(int(f.get("volume_id", 0)), int(f.get("file_key", 0)),
                             int(f.get("cookie", 0)))
        key = d.get("cipher_key") or b""
        if isinstance(key, str):
            key = base64.b64decode(key)
        return cls(
            file_id=fid,
            offset=int(d.get("offset", 0) or 0),
            size=int(d.get("size", 0) or 0),
            modified_ts_ns=int(d.get("modified_ts_ns", 0) or 0),
            e_tag=d.get("e_tag", "") or "",
            cipher_key=bytes(key),
            is_compressed=bool(d.get("is_compressed", False)),
            is_chunk_manifest=bool(d.get("is_chunk_manifest", False)),
        )


@dataclass
class Entry:
    """A filer entry: a file, a directory or a symlink."""

    path: str
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    crtime_ns: int
    uid: int
    gid: int
    mime: str
    inode: int
    chunks: list[Chunk] = field(default_factory=list)
    content: bytes | None = None
    symlink_target: str = ""
    md5: str = ""
    extended: dict[str, bytes] = field(default_factory=dict)
    atime_ns: int = 0  # 0: not recorded (read as the mtime)
    rdev: int = 0  # device number of a char/block device (the kernel's encoding)
    nlink: int = 1  # names of a hard-linked file (the filer's HardLinkCounter), else 1
    hard_link_id: bytes = b""

    @property
    def name(self) -> str:
        """The last path component."""
        return self.path.rstrip("/").rsplit("/", 1)[-1] or "/"

    @property
    def file_size(self) -> int:
        """Size as SeaweedFS defines it: the larger of the recorded size and the end of the
        last chunk (inline content counts when there are no chunks); 0 for directories.
        Needs no planning and no manifest fetch."""
        if self.is_dir:
            return 0
        if self.content is not None and not self.chunks:
            return len(self.content)
        end = max((c.offset + c.size for c in self.chunks), default=0)
        return max(self.size, end)

    @property
    def is_dir(self) -> bool:
        """True for directories."""
        return stat_mod.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        """True for symlinks."""
        return stat_mod.S_ISLNK(self.mode)

    @classmethod
    def from_json(cls, d: dict[str, Any], path: str | None = None) -> Entry:
        """From the filer's JSON entry."""
        content = d.get("Content")
        extended = {
            k: (base64.b64decode(v) if isinstance(v, str) else bytes(v or b""))
            for k, v in (d.get("Extended") or {}).items()
        }
        mtime = _time_ns(d.get("Mtime"))
        return cls(
            path=path or d.get("FullPath") or "/",
            mode=go_mode_to_posix(int(d.get("Mode", 0) or 0)),
            size=int(d.get("FileSize", 0) or 0),
            mtime_ns=mtime,
            ctime_ns=_time_ns(d.get("Ctime")) or mtime,
            crtime_ns=_time_ns(d.get("Crtime")),
            uid=int(d.get("Uid", 0) or 0),
            gid=int(d.get("Gid", 0) or 0),
            mime=d.get("Mime", "") or "",
            inode=int(d.get("Inode", 0) or 0),
            chunks=[Chunk.from_json(c) for c in d.get("chunks") or []],
            content=base64.b64decode(content) if isinstance(content, str) and content else None,
            symlink_target=d.get("SymlinkTarget", "") or "",
            md5=d.get("Md5", "") or "",
            extended=extended,
            atime_ns=_time_ns(d.get("Atime")),
            rdev=int(d.get("Rdev", 0) or 0),
            nlink=max(1, int(d.get("HardLinkCounter", 0) or 0)),
            hard_link_id=base64.b64decode(d.get("HardLinkId") or "") or b"",
        )


def normalize_path(path: str) -> str:
    """``/a/b`` form: leading slash, no trailing slash (except for the root), no ``//``."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise ValueError(f"path {path!r} must not contain '..'")
    return "/" + "/".join(parts)


class FilerClient:
    """Reads entries and listings from a filer's HTTP API."""

    def __init__(self, address: str, http: httpx.Client, page_size: int = 1000) -> None:
        self.address = address
        self.base = http_base(address)
        self._http = http
        self._page_size = page_size

    def _get(self, url: str, **kwargs: Any) -> httpx.Response:
        # GETs are idempotent: a pooled keep-alive connection that the filer (or the pool,
        # under many threads) closed under us is worth one retry on a fresh connection
        # before the filer is called unreachable. Timeouts are not retried.
        for attempt in (1, 2):
            try:
                return self._http.get(url, **kwargs)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as e:
                if attempt == 2:
                    raise Unreachable(f"filer {self.address} unreachable: {e!r}") from e
            except httpx.HTTPError as e:
                raise Unreachable(f"filer {self.address} unreachable: {e!r}") from e
        raise AssertionError("unreachable")

    def get_entry(self, path: str) -> Entry:
        """The entry at ``path``. Raises ``NotFound`` (a ``FileNotFoundError``) when absent."""
        path = normalize_path(path)
        r = self._get(self.base + quote(path), params={"metadata": "true"})
        if r.status_code == 404:
            raise NotFound(f"{path}: no such file or directory on filer {self.address}")
        if r.status_code >= 300:
            raise ServerError(f"filer {self.address} GET {path}: HTTP {r.status_code} "
                              f"{r.text[:200]}")
        entry = Entry.from_json(r.json(), path)
        if path == "/":
            entry.mode = stat_mod.S_IFDIR | (entry.mode & 0o7777 or 0o755)
        return entry

    def iter_dir(self, path: str) -> Iterator[Entry]:
        """Every entry of directory ``path``, page by page."""
        path = normalize_path(path)
        url = self.base + quote(path.rstrip("/") + "/")
        last = ""
        while True:
            params = {"limit": str(self._page_size)}
            if last:
                params["lastFileName"] = last
            r = self._get(url, params=params, headers={"Accept": "application/json"})
            if r.status_code == 404:
                raise NotFound(f"{path}: no such directory on filer {self.address}")
            if r.status_code >= 300:
                raise ServerError(f"filer {self.address} list {path}: HTTP {r.status_code}")
            try:
                body = r.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or "Entries" not in body:
                # A file's path answers with its content, not a listing.
                raise NotADirectory(f"{path}: not a directory")
            entries = body.get("Entries") or []
            for d in entries:
                yield Entry.from_json(d)
            last = body.get("LastFileName") or ""
            if not body.get("ShouldDisplayLoadMore") or not entries or not last:
                return

    # -- writes (through the filer's HTTP API) ------------------------------------------

    def _change(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._http.request(method, self.base + quote(path), **kwargs)
        except httpx.HTTPError as e:
            raise Unreachable(f"filer {self.address} unreachable ({what} {path}): {e!r}") from e
        if r.status_code == 404:
            raise NotFound(f"{path}: no such file or directory on filer {self.address}")
        if r.status_code == 409:
            raise AlreadyExists(f"{path}: exists on filer {self.address} ({r.text[:200]})")
        if r.status_code >= 300:
            raise ServerError(f"filer {self.address} {what} {path}: HTTP {r.status_code} "
                              f"{r.text[:200]}")
        return r

    def put(self, path: str, data: bytes | IO[bytes], max_mb: int = 4,
            mime: str = "application/octet-stream") -> None:
        """Stores ``data`` (bytes, or a binary file object read to its end) at ``path``,
        replacing what is there; the filer cuts it into chunks of ``max_mb`` MiB."""
        path = normalize_path(path)
        body: Any = data if isinstance(data, bytes) else iter(lambda: data.read(1 << 20), b"")
        self._change("PUT", path, "write", params={"maxMB": str(max_mb)}, content=body,
                     headers={"Content-Type": mime})

    def mkdir(self, path: str) -> None:
        """Creates directory ``path`` (and its parents)."""
        self._change("POST", normalize_path(path).rstrip("/") + "/", "mkdir")

    def delete(self, path: str, recursive: bool = False) -> None:
        """Deletes ``path`` (a directory's contents too, with ``recursive``); deleting what
        is not there succeeds, as on the filer."""
        params = {"recursive": "true"} if recursive else {}
        self._change("DELETE", normalize_path(path), "delete", params=params)

    def rename(self, src: str, dst: str) -> None:
        """Moves ``src`` to ``dst`` (replacing a file there)."""
        self._change("POST", normalize_path(dst), "rename",
                     params={"mv.from": normalize_path(src)})
