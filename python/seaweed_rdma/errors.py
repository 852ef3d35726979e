"""The exception hierarchy. Every error this package raises is a ``SeaweedRdmaError``; the
ones that have a POSIX meaning also derive from the matching ``OSError`` subclass and carry
its errno, so ``except FileNotFoundError`` works and the mount can map them to errno."""

from __future__ import annotations

import errno


class SeaweedRdmaError(Exception):
    """Base class of every error raised by seaweed_rdma.

    ``errno`` is the POSIX error the mount answers with; ``reason`` is a stable short name
    of what went wrong (``"not_found"``, ``"crc_mismatch"``...), set on errors raised by
    the Rust engine.
    """

    errno: int | None = errno.EIO
    reason: str = "error"


class InvalidFileId(SeaweedRdmaError, ValueError):
    """A file id that does not follow ``<vid>,<key hex><cookie hex8>[_delta]``."""

    errno = errno.EINVAL


class InvalidRange(SeaweedRdmaError, ValueError):
    """A read range or chunk list that makes no sense."""

    errno = errno.EINVAL


class NotFound(SeaweedRdmaError, FileNotFoundError):
    """A path that does not exist on the filer."""

    errno = errno.ENOENT


class AlreadyExists(SeaweedRdmaError, FileExistsError):
    """The path to create is there already."""

    errno = errno.EEXIST
    reason = "exists"


class IsADirectory(SeaweedRdmaError, IsADirectoryError):
    """A directory where a file was expected."""

    errno = errno.EISDIR


class NotADirectory(SeaweedRdmaError, NotADirectoryError):
    """A file where a directory was expected."""

    errno = errno.ENOTDIR


class NeedleNotFound(SeaweedRdmaError):
    """A needle missing from its volume, or present with another cookie."""

    errno = errno.EIO


class NeedleDeleted(SeaweedRdmaError):
    """A needle that has been deleted."""

    errno = errno.EIO


class CorruptNeedleError(SeaweedRdmaError):
    """Needle bytes that do not parse."""

    errno = errno.EIO


class ChecksumError(SeaweedRdmaError):
    """Needle data whose CRC32-C does not match the stored one."""

    errno = errno.EIO


class StaleLocation(SeaweedRdmaError):
    """A needle location from before its volume was re-opened (vacuumed): locate it again."""

    errno = errno.EAGAIN


class ProtocolError(SeaweedRdmaError):
    """A peer that broke the seaweed-rdma wire protocol."""

    errno = errno.EPROTO


class ConfigError(SeaweedRdmaError, ValueError):
    """A setting that cannot work (a bad flag value, a missing directory...)."""

    errno = errno.EINVAL


class EngineUnavailable(SeaweedRdmaError):
    """The engine's threads could not be started, or the engine was closed."""

    errno = errno.EIO


class VerbsError(SeaweedRdmaError):
    """The RDMA verbs transport failed (library or device missing, a verb failed)."""

    errno = errno.EIO


class VolumeFileNotFound(SeaweedRdmaError, FileNotFoundError):
    """A volume file (``.dat``/``.idx``) that does not exist."""

    errno = errno.ENOENT


class VolumeFileDenied(SeaweedRdmaError, PermissionError):
    """A volume file this process may not read."""

    errno = errno.EACCES


class VolumeIoError(SeaweedRdmaError, OSError):
    """Another I/O error on a volume file; ``errno`` is the one the OS gave."""

    errno = errno.EIO


class ClientClosed(SeaweedRdmaError, ValueError):
    """A call on a ``Client`` after ``close()``."""

    errno = errno.EBADF


class CorruptManifestError(SeaweedRdmaError):
    """A chunk manifest that does not decode."""

    errno = errno.EIO


class UnsupportedVolume(SeaweedRdmaError):
    """Volume files in a form this package does not read locally."""

    errno = errno.EIO


class Unreachable(SeaweedRdmaError, ConnectionError):
    """A filer, master or volume server that cannot be reached; the message names it."""

    errno = errno.EHOSTUNREACH


class Unauthorized(SeaweedRdmaError, PermissionError):
    """A read the cluster refused for want of a valid JWT (pass ``jwt_key=``)."""

    errno = errno.EACCES


class NoLiveLocation(SeaweedRdmaError):
    """A volume that no live volume server holds, or whose every replica failed."""

    errno = errno.EIO


class FastPathFailed(SeaweedRdmaError):
    """The fast path could not deliver some bytes and HTTP fallback was turned off."""

    errno = errno.EIO


class ServerError(SeaweedRdmaError):
    """An unexpected HTTP answer from a SeaweedFS server."""

    errno = errno.EIO
