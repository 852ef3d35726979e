"""Reads needle bytes from volume servers over plain HTTP: the path every byte can take.

Plain chunks are read with ``Range`` requests; compressed and encrypted chunks whole,
CRC-checked against the ETag, then decoded. A replica that fails (connection error, 5xx,
404, short body, CRC mismatch) is skipped for the next; when all fail, the master cache
for that volume is dropped and the error names every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from .errors import (
    ChecksumError,
    NeedleNotFound,
    NoLiveLocation,
    SeaweedRdmaError,
    ServerError,
    Unauthorized,
)
from .master import MasterClient
from .stats import Stats

T = TypeVar("T")


def mint_read_jwt(key: str, file_id: str, ttl_s: int = 60) -> str:
    """An HS256 token with the ``fid`` claim that SeaweedFS's read JWT check expects."""
    import jwt  # imported lazily: only clusters with read JWT need it

    now = int(time.time())
    return jwt.encode({"fid": file_id, "exp": now + ttl_s, "nbf": now - 5}, key,
                      algorithm="HS256")


class VolumeHttpReader:
    """HTTP reads of needle data, with replica fail-over."""

    def __init__(self, master: MasterClient, http: httpx.Client, jwt_key: str | None = None,
                 stats: Stats | None = None) -> None:
        self.master = master
        self._http = http
        self._jwt_key = jwt_key
        # Counts http_crc_mismatches (a replica's bytes failed their CRC) and
        # http_replica_retries (a failed replica was followed by another).
        self._stats = stats if stats is not None else Stats()

    def _headers(self, file_id: str) -> dict[str, str]:
        if not self._jwt_key:
            return {}
        return {"Authorization": f"Bearer {mint_read_jwt(self._jwt_key, file_id)}"}

    def _each_replica(self, file_id: str, attempt: Callable[[str], T]) -> T:
        volume_id = int(file_id.split(",", 1)[0])
        errors: list[str] = []
        tried: set[str] = set()
        for _ in range(2):
            for base in self.master.lookup(volume_id):
                if base in tried:
                    continue
                if tried:
                    self._stats.count("http_replica_retries")
                tried.add(base)
                try:
                    return attempt(base)
                except (httpx.HTTPError, SeaweedRdmaError) as e:
                    if isinstance(e, ChecksumError):
                        self._stats.count("http_crc_mismatches")
                    errors.append(f"{base}: {e}")
            # Every cached location failed: the volume may have moved, so ask again once.
            self.master.invalidate(volume_id)
        if errors and all("HTTP 401" in e for e in errors):
            raise Unauthorized(f"{file_id}: refused by every replica for want of a valid read "
                               f"JWT (give the cluster's jwt.signing.read key as jwt_key)")
        if errors and all(isinstance(e, str) and "not found" in e for e in errors):
            raise NeedleNotFound(f"{file_id}: not found on any replica ({'; '.join(errors)})")
        raise NoLiveLocation(f"{file_id}: every replica failed: {'; '.join(errors)}")

    def _check_status(self, r: httpx.Response, base: str, file_id: str) -> None:
        if r.status_code == 404:
            raise NeedleNotFound(f"{file_id} not found on {base}")
        if r.status_code >= 300:
            raise ServerError(f"{base}/{file_id}: HTTP {r.status_code}")

    def read_range_into(self, file_id: str, offset: int, dest: memoryview) -> None:
        """Fills ``dest`` with needle data ``[offset, offset+len(dest))`` of a plain chunk."""
        size = len(dest)
        if size == 0:
            return

        def attempt(base: str) -> None:
            headers = self._headers(file_id)
            headers["Range"] = f"bytes={offset}-{offset + size - 1}"
            headers["Accept-Encoding"] = "identity"
            with self._http.stream("GET", f"{base}/{file_id}", headers=headers) as r:
                self._check_status(r, base, file_id)
                skip = offset if r.status_code == 200 else 0  # a server that ignored Range
                pos = 0
                for piece in r.iter_bytes():
                    if skip:
                        cut = min(skip, len(piece))
                        piece, skip = piece[cut:], skip - cut
                    take = min(len(piece), size - pos)
                    dest[pos:pos + take] = piece[:take]
                    pos += take
                    if pos == size:
                        break
                if pos != size:
                    raise ServerError(f"{base}/{file_id}: short body, {pos} of {size} bytes")

        self._each_replica(file_id, attempt)

    def read_whole(self, file_id: str) -> tuple[bytes, str | None]:
        """The needle's stored data (not decoded) and its Content-Encoding, CRC-checked."""
        from .codec import check_crc

        def attempt(base: str) -> tuple[bytes, str | None]:
            headers = self._headers(file_id)
            headers["Accept-Encoding"] = "gzip"
            with self._http.stream("GET", f"{base}/{file_id}", headers=headers) as r:
                self._check_status(r, base, file_id)
                body = b"".join(r.iter_raw())
                encoding = r.headers.get("Content-Encoding")
                etag = r.headers.get("ETag", "")
            # The ETag is the CRC of the stored bytes, and with Accept-Encoding: gzip the
            # body is exactly those bytes.
            check_crc(body, etag, f"{file_id} from {base}")
            return body, encoding

        return self._each_replica(file_id, attempt)
