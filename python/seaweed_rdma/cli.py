"""The ``seaweed-rdma`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import stat as stat_mod
import sys
from collections.abc import Sequence

from .errors import SeaweedRdmaError
from .extras import missing
from .flagparse import FlagParser, go_spelling
from .mount import flags as mount_flags

log = logging.getLogger("seaweed_rdma")


def _client_args(p: FlagParser) -> None:
    p.add_argument("--filer", default="127.0.0.1:8888", metavar="HOST:PORT",
                   help="filer address, host:port or host:port.grpcPort (default %(default)s)")
    p.add_argument("--master", default=None, metavar="HOST:PORT",
                   help="master address; found through the filer's gRPC port when omitted")
    p.add_argument("--sidecar", default=None, metavar=":PORT|HOST:PORT",
                   help="fast path: ':PORT' (a sidecar on each volume server's host) or "
                        "'HOST:PORT' (one sidecar for all); omitted: HTTP only")
    p.add_argument("--transport", default="auto", choices=["auto", "tcp", "verbs", "http"],
                   help="fast-path transport (default %(default)s)")
    p.add_argument("--jwt-key", "--jwtKey", dest="jwt_key", default=None, metavar="KEY",
                   help="the cluster's read-JWT signing key")


def _client(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .client import Client

    return Client(a.filer, sidecar=a.sidecar, transport=a.transport, master=a.master,
                  jwt_key=a.jwt_key)


def cmd_cat(a: argparse.Namespace) -> int:
    with _client(a) as c:
        out = sys.stdout.buffer
        offset = a.offset
        remaining = a.size
        with c.open(a.path) as f:
            f.seek(offset)
            while remaining is None or remaining > 0:
                want = 1 << 20 if remaining is None else min(1 << 20, remaining)
                block = f.read(want)
                if not block:
                    break
                out.write(block)
                if remaining is not None:
                    remaining -= len(block)
        out.flush()
        if a.stats:
            print(json.dumps(c.stats(), indent=2), file=sys.stderr)
    return 0


def cmd_stat(a: argparse.Namespace) -> int:
    with _client(a) as c:
        info = c.stat(a.path)
        info["mode"] = stat_mod.filemode(info["mode"])
        print(json.dumps(info, indent=2))
    return 0


def cmd_ls(a: argparse.Namespace) -> int:
    with _client(a) as c:
        for e in sorted(c.scandir(a.path), key=lambda e: e.name):
            if a.long:
                print(f"{stat_mod.filemode(e.mode)} {e.size:>12} {e.name}")
            else:
                print(e.name + ("/" if e.is_dir else ""))
    return 0


def cmd_sidecar(argv: list[str]) -> int:
    from ._core import sidecar_main

    # The sidecar parses its own flags (clap) so the standalone Rust binary and this
    # subcommand accept the same command line; here it also takes Go's one-dash spelling.
    return int(sidecar_main(go_spelling(argv)[0]))


def cmd_mount(a: argparse.Namespace) -> int:
    from .mount import options_from

    logging.getLogger().setLevel(logging.DEBUG if a.debug else logging.INFO)
    opts = options_from(a)
    problem = missing("mount")
    if problem:
        print(f"seaweed-rdma mount: {problem}", file=sys.stderr)
        return 1
    from .mount.main import run_mount

    try:
        return run_mount(opts)
    except (SeaweedRdmaError, OSError) as e:
        print(f"seaweed-rdma mount: {e}", file=sys.stderr)
        return 1


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench import BenchConfig, run_bench

    cfg = BenchConfig(size_mib=a.size_mib, chunk_mib=a.chunk_mib, rounds=a.rounds,
                      random_reads=a.random_reads, out=a.out, plot=a.plot, quiet=a.quiet)
    sidecar = a.sidecar
    return run_bench(cfg, filer=a.filer, sidecar=sidecar, path=a.path)


def cmd_doctor(a: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(as_json=a.json)


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=a.keep)


def build_parser() -> FlagParser:
    """The argument parser for every subcommand (Go's flag spellings, see ``flagparse``)."""
    p = FlagParser(
        prog="seaweed-rdma",
        description="Fast reads for SeaweedFS: a sidecar next to each volume server pushes "
                    "needle bytes to readers (RDMA or TCP); anything the fast path cannot "
                    "deliver comes over plain HTTP.",
    )
    p.add_argument("--log-level", default="WARNING",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("cat", help="write a file's bytes to stdout")
    _client_args(s)
    s.add_argument("path", help="file path on the filer")
    s.add_argument("--offset", type=int, default=0, metavar="BYTES", help="start at this byte")
    s.add_argument("--size", type=int, default=None, metavar="BYTES",
                   help="read at most this many bytes")
    s.add_bool("--stats", help="print read statistics to stderr")
    s.set_defaults(func=cmd_cat)

    s = sub.add_parser("stat", help="print a file's or directory's attributes as JSON")
    _client_args(s)
    s.add_argument("path")
    s.set_defaults(func=cmd_stat)

    s = sub.add_parser("ls", help="list a directory")
    _client_args(s)
    s.add_argument("path", nargs="?", default="/")
    s.add_bool("-l", "--long", help="mode and size too")
    s.set_defaults(func=cmd_ls)

    # The sidecar's flags are parsed by the Rust side (clap), which also answers --help;
    # main() passes them on.
    sub.add_parser("sidecar", add_help=False,
                   help="serve local volumes' needles to readers (Rust; see "
                        "`seaweed-rdma sidecar --help`)")

    s = sub.add_parser("mount", help="mount a filer directory with FUSE (reads over the fast "
                                     "path, writes the way weed mount makes them); flags "
                                     "as `weed mount` (see `seaweed-rdma mount --help`)",
                       description=mount_flags.DESCRIPTION,
                       ignorable=mount_flags.IGNORED_WEED_FLAGS)
    mount_flags.add_mount_flags(s)
    s.set_defaults(func=cmd_mount)

    s = sub.add_parser("bench", help="fast path vs HTTP side by side: throughput, latency "
                                     "percentiles, ratios; JSON and an optional PNG")
    s.add_argument("--filer", default=None, help="a running cluster's filer (default: start "
                                                  "the embedded one with sidecars)")
    s.add_argument("--sidecar", default=None, help="fast path for --filer (':PORT' or "
                                                   "'HOST:PORT')")
    s.add_argument("--path", default=None, help="file to read on --filer")
    s.add_argument("--size-mib", type=int, default=256, help="embedded: file size")
    s.add_argument("--chunk-mib", type=int, default=4, help="embedded: chunk size")
    s.add_argument("--rounds", type=int, default=3, help="sequential rounds (best counts)")
    s.add_argument("--random-reads", type=int, default=3000, help="4 KiB reads per path")
    s.add_argument("--out", default="bench-results/bench.json", help="JSON results")
    s.add_argument("--plot", default=None, metavar="FILE", help="also write a PNG plot")
    s.add_bool("--quiet", help="no progress lines")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("doctor", help="what this host can do: RDMA devices, ports, GIDs, "
                                      "memlock, rdma_rxe, FUSE (exit 1 when RDMA is unusable)")
    s.add_bool("--json", help="machine-readable report")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("demo", help="start a local SeaweedFS, write sample files, read them "
                                    "back over each path and print a table")
    s.add_bool("--keep", help="leave the cluster running until Enter is pressed")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``seaweed-rdma``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "sidecar":
        return cmd_sidecar(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return 0
    except (SeaweedRdmaError, OSError, ValueError) as e:
        print(f"seaweed-rdma {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
