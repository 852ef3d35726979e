"""``weed mount``'s command line, accepted as it is (one dash or two, see
:mod:`seaweed_rdma.flagparse`), so an existing ``weed mount ...`` line works with the
program name swapped."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field, fields

from ..flagparse import FlagParser

log = logging.getLogger("seaweed_rdma.mount")

# weed mount flags that this mount accepts but does not act on (yet): they are warned
# about, never an error, so existing command lines keep working. The value says whether
# the flag takes a value.
IGNORED_WEED_FLAGS: dict[str, bool] = {
    "cacheDir": True, "cacheDirWrite": True, "cacheSymlink": False,
    "collectionQuotaMB": True, "disableXAttr": False, "dirAutoCreate": False,
    "filer.path.cache": True,
    "localSocket": True, "map.gid": True, "map.uid": True, "memprofile": True, "cpuprofile": True,
    "nonempty": False, "volumeServerAccess": True,
    "asyncDio": False, "cacheMetaTtlSec.dir": True, "writebackCache": False,
    "includeSystemEntries": False, "subscribeMetaDir": True, "fuse.maxBackground": True,
    "fuse.congestionThreshold": True, "dirListCacheLimit": True, "sys.max_readahead": True,
    "volumeServerAccess.grpc": True,
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
    rdma_verify: bool = False
    rdma_transport: str = "auto"
    rdma_connect_timeout_ms: int = 1000
    rdma_busy_poll_us: int = 50
    rdma_native_reads: bool = True
    rdma_native_threads: int = 4
    rdma_read_ahead_mib: int = 16
    rdma_read_ahead_total_mib: int = 64
    read_only: bool = False
    cache_meta_ttl_sec: float = 60.0
    concurrent_readers: int = 128
    allow_others: bool = True
    auto_unmount: bool = True
    debug: bool = False
    master: str | None = None
    jwt_key: str | None = None
    readahead_mib: int = 8
    cache_capacity_mb: int = 128
    chunk_size_limit_mb: int = 2
    concurrent_writers: int = 128
    collection: str = ""
    replication: str = ""
    ttl_sec: int = 0
    disk_type: str = ""
    data_center: str = ""
    umask: str = "022"
    filer_retry_sec: float = 15.0
    ignored: list[str] = field(default_factory=list)

    @property
    def umask_bits(self) -> int:
        """``-umask`` as permission bits."""
        return int(self.umask, 8) & 0o7777


DESCRIPTION = ("Mount a SeaweedFS filer, with reads over the fast path (sidecars) and HTTP "
               "fallback, and writes the way weed mount makes them (volumes assigned through "
               "the filer, chunks POSTed to volume servers, entries over gRPC). Flags are "
               "spelled like `weed mount`; other `weed mount` "
               "flags are accepted with a warning.")


def build_parser() -> FlagParser:
    """The mount's argument parser on its own (``seaweed-rdma``'s ``mount`` subcommand is
    made the same way, by ``add_mount_flags``)."""
    p = FlagParser(prog="seaweed-rdma mount", description=DESCRIPTION,
                   ignorable=IGNORED_WEED_FLAGS)
    add_mount_flags(p)
    return p


def add_mount_flags(p: FlagParser) -> None:
    """Adds the mount's flags to ``p`` (made with ``ignorable=IGNORED_WEED_FLAGS``)."""
    p.add_argument("--filer", required=True, metavar="HOST:PORT", help="filer host:port[.grpcPort]")
    p.add_argument("--dir", required=True, metavar="MOUNTPOINT", help="mount point")
    p.add_argument("--filer.path", dest="filer_path", default="/", metavar="PATH",
                   help="the filer directory to mount (default %(default)s)")
    p.add_bool("--rdma.enabled", dest="rdma_enabled", default=False,
               help="read over the sidecars' fast path")
    p.add_argument("--rdma.sidecar", dest="rdma_sidecar", default=None,
                   metavar=":PORT|HOST:PORT",
                   help="':PORT' (a sidecar on each volume server's host) or 'HOST:PORT'")
    p.add_bool("--rdma.fallback", dest="rdma_fallback", default=True,
               help="read over HTTP what the fast path cannot (default on; reads never "
                    "fail because of the fast path)")
    p.add_argument("--rdma.maxConcurrent", dest="rdma_max_concurrent", type=int, default=64,
                   metavar="N",
                   help="fast-path requests in flight per connection")
    p.add_argument("--rdma.timeoutMs", dest="rdma_timeout_ms", type=int, default=5000,
                   metavar="MS",
                   help="deadline of one fast-path batch, in ms")
    p.add_argument("--rdma.busyPollUs", dest="rdma_busy_poll_us", type=int, default=50,
                   metavar="US",
                   help="how long a small fast-path read keeps checking for its answer "
                        "before its thread sleeps (0: never; see docs/operations.md, "
                        "'Busy polling')")
    p.add_bool("--rdma.nativeReads", dest="rdma_native_reads", default=True,
               help="answer reads of open files on Rust threads straight from the fast "
                    "path, past pyfuse3's loop (default on; off: every read goes through "
                    "the Python operations; see docs/operations.md, 'Native reads')")
    p.add_argument("--rdma.nativeThreads", dest="rdma_native_threads", type=int, default=4,
                   metavar="N",
                   help="threads reading FUSE requests for native reads (default "
                        "%(default)s)")
    p.add_argument("--rdma.readAheadMiB", dest="rdma_read_ahead_mib", type=int, default=16,
                   metavar="MIB",
                   help="native reads: read up to this far ahead of a handle read in order, "
                        "so the disk under the sidecar has many reads in flight (0: off; "
                        "default %(default)s)")
    p.add_argument("--rdma.readAheadTotalMiB", dest="rdma_read_ahead_total_mib", type=int,
                   default=64, metavar="MIB",
                   help="native reads: memory all handles' read-ahead may hold together "
                        "(default %(default)s)")
    p.add_bool("--rdma.verify", dest="rdma_verify", default=False,
               help="read every chunk whole and check it against its CRC and the filer's "
                    "MD5 e_tag, so wrong bytes from a sidecar or replica are caught "
                    "(costs whole-chunk reads; see docs/trust.md)")
    p.add_bool("--readOnly", dest="read_only", default=False,
               help="refuse every write with EROFS")
    p.add_argument("--chunkSizeLimitMB", dest="chunk_size_limit_mb", type=int, default=2,
                   metavar="MB",
                   help="write buffer per chunk; files are uploaded in chunks of this size "
                        "(default %(default)s, as weed mount)")
    p.add_argument("--concurrentWriters", dest="concurrent_writers", type=int, default=128,
                   metavar="N", help="chunk uploads in flight at once (default %(default)s)")
    p.add_argument("--collection", default="", metavar="NAME",
                   help="collection to create files in")
    p.add_argument("--replication", default="", metavar="XYZ",
                   help="replication of new chunks (e.g. 001); empty: the filer decides")
    p.add_argument("--ttl", dest="ttl_sec", type=int, default=0, metavar="SECS",
                   help="time to live of new files, in seconds")
    p.add_argument("--disk", "--diskType", dest="disk_type", default="", metavar="TYPE",
                   help="[hdd|ssd|<tag>] disk type of new chunks")
    p.add_argument("--dataCenter", dest="data_center", default="", metavar="DC",
                   help="prefer volumes in this data center for writes")
    p.add_argument("--umask", default="022", metavar="OCTAL",
                   help="octal umask, accepted as weed mount 4.48 accepts it: there it "
                        "does not change the modes of created files and directories (the "
                        "kernel applies the caller's umask), and neither does it here "
                        "(default %(default)s)")
    p.add_argument("--rdma.connectTimeoutMs", dest="rdma_connect_timeout_ms", type=int,
                   default=1000, metavar="MS",
                   help="deadline of a connection's handshake with a sidecar, in ms (a verbs "
                        "handshake includes connecting the queue pair)")
    p.add_argument("--rdma.transport", dest="rdma_transport", default="auto",
                   choices=("auto", "verbs", "tcp"),
                   help="fast-path transport: auto (verbs where both ends can, else tcp), "
                        "verbs (RDMA only: with -rdma.fallback=false a read fails rather "
                        "than use anything else) or tcp")
    p.add_argument("--cacheMetaTtlSec", dest="cache_meta_ttl_sec", type=float, default=60.0,
                   metavar="SECS",
                   help="the kernel's entry/attr timeout, and how long metadata is held "
                        "while the filer's change stream is down (while it is up, changes "
                        "elsewhere are applied as they happen); default 60, as weed mount")
    p.add_argument("--concurrentReaders", dest="concurrent_readers", type=int, default=128,
                   metavar="N",
                   help="filer and read calls served at once (default 128, as weed mount)")
    p.add_bool("--allowOthers", dest="allow_others", default=True,
               help="let other users use the mount (FUSE allow_other; default on, as "
                    "weed mount; permissions are checked by the kernel from each entry's "
                    "mode, uid and gid)")
    p.add_bool("--autoUnmount", dest="auto_unmount", default=True,
               help="unmount if this process dies (FUSE auto_unmount)")
    p.add_argument("--readaheadMiB", dest="readahead_mib", type=int, default=8,
                   metavar="MIB",
                   help="prefetch this much ahead of a sequential reader")
    p.add_argument("--cacheCapacityMB", dest="cache_capacity_mb", type=int, default=128,
                   metavar="MB",
                   help="memory for cached file blocks, shared by all files (default "
                        "%(default)s, as weed mount)")
    p.add_argument("--filerRetrySec", dest="filer_retry_sec", type=float, default=15.0,
                   metavar="SECS",
                   help="how long a call waits for a filer that cannot be reached (stopped, "
                        "restarting) before it fails, with writes kept buffered meanwhile "
                        "(default %(default)s, about what weed mount's retries add up to)")
    p.add_argument("--master", default=None, metavar="HOST:PORT",
                   help="master host:port (found via the filer when omitted)")
    p.add_argument("--jwtKey", dest="jwt_key", default=None, metavar="KEY",
                   help="read-JWT signing key")
    p.add_bool("--debug", default=False, help="log every FUSE operation")


def parse_mount_args(argv: list[str]) -> MountOptions:
    """Parses a ``weed mount``-style command line."""
    return options_from(build_parser().parse_args(argv))


def options_from(ns: argparse.Namespace) -> MountOptions:
    """The options in a namespace parsed with ``add_mount_flags`` (other attributes, such as
    the subcommand's, are left out); warns about ignored and overridden flags."""
    wanted = {f.name for f in fields(MountOptions)}
    opts = MountOptions(**{k: v for k, v in vars(ns).items() if k in wanted})
    for name in opts.ignored:
        log.warning("weed mount flag -%s is accepted but not implemented by this mount; "
                    "ignored", name)
    try:
        opts.umask_bits  # noqa: B018 (validates the octal text)
    except ValueError:
        raise SystemExit(f"seaweed-rdma mount: -umask={opts.umask!r} is not octal") from None
    if opts.rdma_busy_poll_us < 0:
        raise SystemExit(f"seaweed-rdma mount: -rdma.busyPollUs={opts.rdma_busy_poll_us} "
                         "must be 0 or more")
    if opts.rdma_read_ahead_mib < 0 or opts.rdma_read_ahead_total_mib < 0:
        raise SystemExit("seaweed-rdma mount: -rdma.readAheadMiB and -rdma.readAheadTotalMiB "
                         "must be 0 or more")
    if opts.rdma_native_threads < 1:
        raise SystemExit(f"seaweed-rdma mount: -rdma.nativeThreads={opts.rdma_native_threads} "
                         "must be 1 or more")
    if opts.rdma_sidecar and not opts.rdma_enabled:
        log.info("-rdma.sidecar given without -rdma.enabled: fast path off")
    return opts
