"""A seekable, read-only binary file object over ``Client``."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, NoReturn, Protocol

if TYPE_CHECKING:
    from .reader import FileView, ReadPath


class ReadPathOwner(Protocol):
    """What a file object reads through: the ``Client``'s read path of the current
    process (a new one after a fork)."""

    @property
    def reader(self) -> ReadPath: ...


def _not_across_processes(what: str) -> NoReturn:
    raise TypeError(f"a {what} cannot be pickled or sent to another process: pass the "
                    "Client (it pickles as its configuration) and the path, and open the "
                    "file there")


class SeaweedRawFile(io.RawIOBase):
    """Raw reads go straight to the shared read path; wrap in ``io.BufferedReader``."""

    def __init__(self, owner: ReadPathOwner, path: str, view: FileView) -> None:
        super().__init__()
        self._owner = owner
        self._view = view
        self._pos = 0
        self.name = path
        self.mode = "rb"

    @property
    def size(self) -> int:
        """The file's size when it was opened."""
        return self._view.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        n = self._owner.reader.readinto(self._view, memoryview(buffer).cast("B"), self._pos)
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def readall(self) -> bytes:
        """The rest of the file as one ``bytes``, filled in place (no intermediate copy)."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        data = self._owner.reader.read(self._view, self._pos, max(0, self.size - self._pos))
        self._pos += len(data)
        return data

    def __reduce__(self) -> NoReturn:
        _not_across_processes("seaweed_rdma file object")


class SeaweedFile(io.BufferedReader):
    """What ``Client.open`` returns: a buffered, seekable binary reader."""

    def __reduce__(self) -> NoReturn:
        _not_across_processes("seaweed_rdma file object")
