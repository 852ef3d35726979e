"""``seaweed-rdma mount``: a read-only FUSE mount spelled like ``weed mount``."""

from __future__ import annotations

from .flags import MountOptions, parse_mount_args

__all__ = ["MountOptions", "parse_mount_args"]
