"""``seaweed-rdma mount``: a FUSE mount spelled like ``weed mount``: reads over the fast
path (sidecars, then HTTP), writes the way ``weed mount`` makes them."""

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
