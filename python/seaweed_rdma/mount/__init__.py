"""``seaweed-rdma mount``: a FUSE mount that reads and writes a SeaweedFS filer's tree,
spelled like ``weed mount``.

Reads go over the fast path (sidecars, then HTTP for what it cannot deliver); writes are
made the way ``weed mount`` makes them (chunks uploaded to volume servers, entries written
with the filer's gRPC API). ``fs`` lists the modules and the one owner of each piece of
the mount's state.
"""

from __future__ import annotations

from .flags import (
    DESCRIPTION,
    IGNORED_WEED_FLAGS,
    MountOptions,
    add_mount_flags,
    options_from,
    parse_mount_args,
)

__all__ = [
    "DESCRIPTION",
    "IGNORED_WEED_FLAGS",
    "MountOptions",
    "add_mount_flags",
    "options_from",
    "parse_mount_args",
]
