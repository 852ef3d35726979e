"""``weed mount``'s command line, accepted as it is (one dash or two), so an existing
``weed mount ...`` line works with the program name swapped."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field

log = logging.getLogger("seaweed_rdma.mount")

# weed mount flags that this mount accepts but does not act on (yet): they are warned
# about, never an error, so existing command lines keep working.
IGNORED_WEED_FLAGS = {
    "cacheDir": 1, "cacheDirWrite": 1, "cacheSymlink": 0,
    "chunkSizeLimitMB": 1, "collection": 1, "collectionQuotaMB": 1, "concurrentWriters": 1,
    "dataCenter": 1, "disk": 1, "disableXAttr": 0, "dirAutoCreate": 0, "filer.path.cache": 1,
    "localSocket": 1, "map.gid": 1, "map.uid": 1, "memprofile": 1, "cpuprofile": 1,
    "nonempty": 0, "replication": 1, "ttl": 1, "umask": 1, "volumeServerAccess": 1,
    "asyncDio": 0, "cacheMetaTtlSec.dir": 1, "writebackCache": 0, "includeSystemEntries": 0,
    "subscribeMetaDir": 1, "fuse.maxBackground": 1, "fuse.congestionThreshold": 1,
    "dirListCacheLimit": 1, "sys.max_readahead": 1, "volumeServerAccess.grpc": 1,
}


@dataclass
class MountOptions:
    """What ``seaweed-rdma mount`` was asked to do."""

    filer: str
    dir: str
    filer_path: str = "/"
    rdma_enabled: bool = False
    rdma_sidecar: str | None = None
    rdma_fallback: bool = True
    rdma_max_concurrent: int = 64
    rdma_timeout_ms: int = 5000
    rdma_transport: str = "auto"
    rdma_connect_timeout_ms: int = 1000
    read_only: bool = True
    cache_meta_ttl_sec: float = 1.0
    concurrent_readers: int = 32
    allow_others: bool = False
    auto_unmount: bool = True
    debug: bool = False
    master: str | None = None
    jwt_key: str | None = None
    readahead_mib: int = 8
    cache_capacity_mb: int = 128
    ignored: list[str] = field(default_factory=list)


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "t", "yes", "y", "on"):
        return True
    if low in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _normalise(argv: list[str]) -> tuple[list[str], list[str]]:
    """Go's flag package takes ``-name``, ``--name``, ``-name=value`` and bare booleans;
    argparse wants ``--name``. Unknown weed flags are set aside to be warned about."""
    out: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            arg = "-" + arg
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if name in IGNORED_WEED_FLAGS:
            ignored.append(name)
            takes_value = IGNORED_WEED_FLAGS[name] and "=" not in arg
            i += 2 if takes_value else 1
            continue
        out.append(arg)
        i += 1
    return out, ignored


def build_parser() -> argparse.ArgumentParser:
    """The mount's argument parser (its ``--help`` is what users see)."""
    p = argparse.ArgumentParser(
        prog="seaweed-rdma mount",
        description="Mount a SeaweedFS filer read-only, with reads over the fast path "
                    "(sidecars) and HTTP fallback. Flags are spelled like `weed mount` and "
                    "take one dash or two.",
    )
    p.add_argument("--filer", required=True, help="filer host:port[.grpcPort]")
    p.add_argument("--dir", required=True, help="mount point")
    p.add_argument("--filer.path", dest="filer_path", default="/",
                   help="the filer directory to mount (default %(default)s)")
    p.add_argument("--rdma.enabled", dest="rdma_enabled", nargs="?", const=True, default=False,
                   type=_bool, help="read over the sidecars' fast path")
    p.add_argument("--rdma.sidecar", dest="rdma_sidecar", default=None,
                   help="':PORT' (a sidecar on each volume server's host) or 'HOST:PORT'")
    p.add_argument("--rdma.fallback", dest="rdma_fallback", nargs="?", const=True, default=True,
                   type=_bool, help="read over HTTP what the fast path cannot (default on; "
                                    "reads never fail because of the fast path)")
    p.add_argument("--rdma.maxConcurrent", dest="rdma_max_concurrent", type=int, default=64,
                   help="fast-path requests in flight per connection")
    p.add_argument("--rdma.timeoutMs", dest="rdma_timeout_ms", type=int, default=5000,
                   help="deadline of one fast-path batch, in ms")
    p.add_argument("--rdma.connectTimeoutMs", dest="rdma_connect_timeout_ms", type=int,
                   default=1000, help="deadline of a connection's handshake with a sidecar, "
                                      "in ms (a verbs handshake includes the queue pair)")
    p.add_argument("--rdma.transport", dest="rdma_transport", default="auto",
                   choices=("auto", "verbs", "tcp"),
                   help="fast-path transport: auto (verbs where both ends can, else tcp), "
                        "verbs (RDMA only: with -rdma.fallback=false a read fails rather "
                        "than use anything else) or tcp")
    p.add_argument("--readOnly", dest="read_only", nargs="?", const=True, default=True,
                   type=_bool, help="always on: this mount is read-only")
    p.add_argument("--cacheMetaTtlSec", dest="cache_meta_ttl_sec", type=float, default=1.0,
                   help="seconds metadata is cached (also the kernel's entry/attr timeout)")
    p.add_argument("--concurrentReaders", dest="concurrent_readers", type=int, default=32,
                   help="reads served at once")
    p.add_argument("--allowOthers", dest="allow_others", nargs="?", const=True, default=False,
                   type=_bool, help="let other users see the mount (FUSE allow_other)")
    p.add_argument("--autoUnmount", dest="auto_unmount", nargs="?", const=True, default=True,
                   type=_bool, help="unmount if this process dies (FUSE auto_unmount)")
    p.add_argument("--readaheadMiB", dest="readahead_mib", type=int, default=8,
                   help="prefetch this much ahead of a sequential reader")
    p.add_argument("--cacheCapacityMB", dest="cache_capacity_mb", type=int, default=128,
                   help="memory for cached file blocks, shared by all files (default "
                        "%(default)s, as weed mount)")
    p.add_argument("--master", default=None, help="master host:port (found via the filer "
                                                  "when omitted)")
    p.add_argument("--jwtKey", dest="jwt_key", default=None, help="read-JWT signing key")
    p.add_argument("--debug", nargs="?", const=True, default=False, type=_bool,
                   help="log every FUSE operation")
    return p


def parse_mount_args(argv: list[str]) -> MountOptions:
    """Parses a ``weed mount``-style command line."""
    normalised, ignored = _normalise(argv)
    ns = build_parser().parse_args(normalised)
    opts = MountOptions(**vars(ns), ignored=ignored)
    for name in ignored:
        log.warning("weed mount flag -%s is accepted but not implemented by this mount; "
                    "ignored", name)
    if not opts.read_only:
        log.warning("-readOnly=false: this mount is read-only for now; writes get EROFS")
        opts.read_only = True
    if opts.rdma_sidecar and not opts.rdma_enabled:
        log.info("-rdma.sidecar given without -rdma.enabled: fast path off")
    return opts
