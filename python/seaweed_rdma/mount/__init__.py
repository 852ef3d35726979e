"""``seaweed-rdma mount``: a read-only FUSE mount spelled like ``weed mount``."""

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
