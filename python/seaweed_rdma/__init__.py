"""seaweed_rdma: fast reads for SeaweedFS.

``Client`` reads files by path from a filer; bytes come over the fast path (a sidecar next to
each volume server) where one is configured, and over plain HTTP from the volume servers
otherwise or whenever the fast path cannot deliver them.
"""

from __future__ import annotations

from ._core import __version__
from .client import Client
from .errors import (
    ChecksumError,
    CorruptNeedleError,
    InvalidFileId,
    NoLiveLocation,
    NotFound,
    SeaweedRdmaError,
    Unreachable,
)

__all__ = [
    "ChecksumError",
    "Client",
    "CorruptNeedleError",
    "InvalidFileId",
    "NoLiveLocation",
    "NotFound",
    "SeaweedRdmaError",
    "Unreachable",
    "__version__",
]
