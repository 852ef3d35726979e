"""``seaweed-rdma bench``: the fast path against HTTP on the same cluster and files, side by
side in one run, as throughput and latency percentiles with ratios; JSON out, PNG on request.

Against a running cluster (``--filer``, with ``--sidecar``) it reads a file you name or
writes a scratch file; without ``--filer`` it starts the embedded cluster and sidecars.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .client import Client
from .cluster import LocalCluster, free_port
from .extras import missing

MIB = 1 << 20


@dataclass
class BenchConfig:
    """What to measure."""

    size_mib: int = 256
    chunk_mib: int = 4
    block_mib: int = 16
    rounds: int = 3
    random_reads: int = 3000
    out: str = "bench-results/bench.json"
    plot: str | None = None
    quiet: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def iperf3_loopback(seconds: int = 3) -> float | None:
    """Loopback TCP throughput in bytes/s measured by iperf3, or None without it."""
    if not shutil.which("iperf3"):
        return None
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                              "-J"], capture_output=True, text=True, timeout=seconds + 20)
        return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]) / 8
    except (subprocess.SubprocessError, ValueError, KeyError):
        return None
    finally:
        server.kill()
        server.wait()


def sequential(client: Client, path: str, size: int, block: int, rounds: int,
               say: Any = None) -> float:
    """Best-of-``rounds`` bytes/s reading ``path`` front to back in ``block`` pieces."""
    buf = bytearray(block)
    best = 0.0
    for r in range(rounds):
        # verify=True reads chunks whole and keeps them decoded: each round starts cold,
        # so later rounds measure the wire, not that cache.
        client.reader.forget_decoded()
        t0 = time.perf_counter()
        off = 0
        while off < size:
            n = client.readinto(path, buf, off)
            if n <= 0:
                raise RuntimeError(f"{path}: short file at {off}")
            off += n
        best = max(best, size / (time.perf_counter() - t0))
        if say:
            say(f"    round {r + 1}/{rounds}: {size / (time.perf_counter() - t0) / 1e6:.0f} MB/s")
    return best


def best_of(fn: Any, size: int, rounds: int) -> float:
    """Best-of-``rounds`` bytes/s of ``fn()``, which reads ``size`` bytes once."""
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = max(best, size / (time.perf_counter() - t0))
    return best


def fresh_reads(client: Client, path: str, size: int, block: int) -> None:
    """``path`` front to back with ``Client.read``: a new ``bytes`` per ``block``, as
    users call it (so page faults on fresh memory are part of the cost)."""
    for off in range(0, size, block):
        if len(client.read(path, off, block)) != min(block, size - off):
            raise RuntimeError(f"{path}: short read at {off}")


def filer_get(url: str, size: int, rounds: int) -> float:
    """Best-of-``rounds`` bytes/s of a plain GET through the filer."""
    best = 0.0
    with httpx.Client(timeout=300) as http:
        for _ in range(rounds):
            t0 = time.perf_counter()
            got = 0
            with http.stream("GET", url) as r:
                for piece in r.iter_raw(MIB):
                    got += len(piece)
            best = max(best, got / (time.perf_counter() - t0))
    return best


def random_reads(client: Client, path: str, size: int, count: int, io: int = 4096
                 ) -> dict[str, float]:
    """Latency percentiles (µs) of ``count`` aligned ``io``-byte reads at random offsets,
    each from cold (with ``verify=True``, the whole chunk is fetched every time)."""
    rng = random.Random(1)
    buf = bytearray(io)
    lat = []
    for _ in range(count):
        off = rng.randrange(0, max(1, size - io)) // io * io
        client.reader.forget_decoded()
        t0 = time.perf_counter()
        client.readinto(path, buf, off)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    n = len(lat)
    return {"p50_us": lat[n // 2] * 1e6, "p90_us": lat[int(n * 0.9)] * 1e6,
            "p99_us": lat[int(n * 0.99)] * 1e6, "mean_us": statistics.fmean(lat) * 1e6}


def fsspec_filesystem(filer: str, sidecar: Any, transport: str) -> Any:
    """A ``seaweedfs://`` filesystem over the fast path, or None without fsspec."""
    try:
        from .fsspec import SeaweedFileSystem
    except ImportError:
        return None
    return SeaweedFileSystem(filer=filer, sidecar=sidecar, transport=transport,
                             skip_instance_cache=True)


def fast_transports() -> tuple[list[str], str | None]:
    """The fast-path transports this host can measure, and why verbs is missing if it is."""
    from .doctor import report

    r = report()
    if r["usable"]:
        return ["tcp", "verbs"], None
    return ["tcp"], "; ".join(r["reasons"]) or "no usable RDMA device"


def run_against(cfg: BenchConfig, filer: str, sidecar: Any, path: str, size: int,
                filer_url: str | None) -> dict[str, Any]:
    """Measures every path on one file: each fast-path transport, HTTP to the volume
    servers, and (given its URL) a GET through the filer."""
    res: dict[str, Any] = {"size_bytes": size, "path": path, "cpus": os.cpu_count()}
    transports, no_verbs = fast_transports()
    res["verbs_unavailable"] = no_verbs
    seq: dict[str, float] = {}
    rnd: dict[str, dict[str, float]] = {}
    fast_stats: dict[str, Any] = {}
    for t in transports:
        with Client(filer, sidecar=sidecar, transport=t) as fast:
            cfg.say(f"sequential, fast path over {t} ...")
            seq[f"fast_{t}"] = sequential(fast, path, size, cfg.block_mib * MIB, cfg.rounds,
                                          cfg.say)
            cfg.say(f"sequential, fast path over {t}, read() into new bytes ...")
            seq[f"fast_{t}_read"] = best_of(
                lambda c=fast: fresh_reads(c, path, size, cfg.block_mib * MIB), size,
                cfg.rounds)
            cfg.say(f"whole file, fast path over {t}, read() ...")
            seq[f"fast_{t}_whole"] = best_of(lambda c=fast: c.read(path), size, cfg.rounds)
            cfg.say(f"{cfg.random_reads} random 4 KiB reads, fast path over {t} ...")
            rnd[f"fast_{t}"] = random_reads(fast, path, size, cfg.random_reads)
            st = fast.stats()
            fast_stats[t] = {k: st[k] for k in ("fast", "http", "fallbacks", "transport")}
    t = transports[-1]
    fsspec_fs = fsspec_filesystem(filer, sidecar, t)
    if fsspec_fs is not None:
        cfg.say(f"whole file, fsspec cat_file over {t} ...")
        seq[f"fsspec_cat_{t}"] = best_of(lambda: fsspec_fs.cat_file(path), size, cfg.rounds)
        fsspec_fs.client.close()
    with Client(filer, sidecar=sidecar, transport=t, verify=True) as verified:
        cfg.say(f"sequential, fast path over {t} with verify=True ...")
        seq[f"fast_{t}_verify"] = sequential(verified, path, size, cfg.block_mib * MIB,
                                             cfg.rounds, cfg.say)
        cfg.say(f"{cfg.random_reads // 3} random 4 KiB reads with verify=True ...")
        rnd[f"fast_{t}_verify"] = random_reads(verified, path, size, cfg.random_reads // 3)
    with Client(filer) as http:
        cfg.say("sequential, HTTP to the volume servers ...")
        seq["http_volume"] = sequential(http, path, size, cfg.block_mib * MIB, cfg.rounds,
                                        cfg.say)
        cfg.say(f"{cfg.random_reads} random 4 KiB reads over HTTP ...")
        rnd["http_volume"] = random_reads(http, path, size, cfg.random_reads)
    if filer_url:
        cfg.say("sequential, GET through the filer ...")
        seq["http_filer"] = filer_get(filer_url, size, cfg.rounds)
    cfg.say("loopback TCP ceiling (iperf3) ...")
    res["iperf3_loopback_bytes_per_s"] = iperf3_loopback()
    res["sequential_bytes_per_s"] = seq
    res["random_4k"] = rnd
    res["fast_stats"] = fast_stats
    return res


def embedded(cfg: BenchConfig) -> dict[str, Any]:
    """Starts the embedded cluster and sidecars, writes the file, measures."""
    cfg.say("starting an embedded SeaweedFS and sidecars ...")
    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl:
        for vs in cl.volume_servers:
            cl.add_sidecar(vs)
        size = cfg.size_mib * MIB
        cfg.say(f"writing a {cfg.size_mib} MiB file in {cfg.chunk_mib} MiB chunks ...")
        rng = random.Random(0)
        data = b"".join(rng.randbytes(min(16 * MIB, size - i)) for i in range(0, size, 16 * MIB))
        cl.upload("/bench/seq.bin", data, max_mb=cfg.chunk_mib)
        del data
        return run_against(cfg, cl.filer.grpc_address, cl.sidecar_map(), "/bench/seq.bin",
                           size, f"{cl.filer.url}/bench/seq.bin")


def report(res: dict[str, Any]) -> str:
    """The table with ratios: each path against HTTP to the volume servers and against a
    GET through the filer (the peers a user would otherwise read through)."""
    seq, rnd = res["sequential_bytes_per_s"], res["random_4k"]
    vol, filer = seq.get("http_volume"), seq.get("http_filer")
    best = max(v for k, v in seq.items() if k.startswith("fast_"))
    best_rnd = min(r["p50_us"] for k, r in rnd.items() if k.startswith("fast_"))

    def ratio(v: float, peer: float | None) -> str:
        return f"{v / peer:10.2f}x" if peer else f"{'-':>11s}"

    lines = [f"sequential read of {res['size_bytes'] / MIB:.0f} MiB "
             "(_read: read() into new bytes per block; _whole: read() of the whole file)",
             f"  {'path':20s} {'MB/s':>9s} {'/ http_vol':>11s} {'/ filer GET':>11s}"]
    for name, v in seq.items():
        lines.append(f"  {name:20s} {v / 1e6:9.1f} {ratio(v, vol)} {ratio(v, filer)}")
    loop = res.get("iperf3_loopback_bytes_per_s")
    if loop:
        lines.append(f"  {'iperf3 loopback':20s} {loop / 1e6:9.1f} (best fast path is "
                     f"{best / loop:.0%} of it)")
    lines += ["4 KiB random reads, one thread",
              f"  {'path':20s} {'p50 us':>9s} {'p90 us':>9s} {'p99 us':>9s} {'p50 / fast':>11s}"]
    for name, r in rnd.items():
        lines.append(f"  {name:20s} {r['p50_us']:9.1f} {r['p90_us']:9.1f} {r['p99_us']:9.1f} "
                     f"{r['p50_us'] / best_rnd:10.2f}x")
    if res.get("verbs_unavailable"):
        lines.append(f"verbs: not measured here: {res['verbs_unavailable']}")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str) -> None:
    """A two-panel PNG: throughput per path and latency percentiles per path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from e
    seq, rnd = res["sequential_bytes_per_s"], res["random_4k"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(list(seq), [v / 1e6 for v in seq.values()], color="tab:blue")
    a.set_ylabel("MB/s")
    a.set_title("sequential read")
    names = list(rnd)
    for i, q in enumerate(("p50_us", "p90_us", "p99_us")):
        b.bar([x + i * 0.25 for x in range(len(names))], [rnd[n][q] for n in names], 0.25,
              label=q.split("_")[0])
    b.set_xticks([x + 0.25 for x in range(len(names))], names)
    b.set_ylabel("µs")
    b.set_title("4 KiB random read latency")
    b.legend()
    fig.tight_layout()
    fig.savefig(path)


def run_bench(cfg: BenchConfig, filer: str | None = None, sidecar: Any = None,
              path: str | None = None) -> int:
    """Runs the bench, prints the table, writes JSON (and a PNG); returns the exit status.
    A plot without matplotlib is refused before anything runs."""
    if cfg.plot:
        problem = missing("plot")
        if problem:
            print(f"seaweed-rdma bench: {problem}", file=sys.stderr)
            return 1
    if filer is None:
        res = embedded(cfg)
    else:
        with Client(filer) as c:
            if path is None:
                raise ValueError("--path is required with --filer (a file to read)")
            size = c.stat(path)["size"]
        res = run_against(cfg, filer, sidecar, path, size, None)
    print(report(res))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    if cfg.plot:
        plot(res, cfg.plot)
        print(f"wrote {cfg.plot}")
    return 0
