"""Where a 4 KiB read's time goes, layer by layer, on one embedded cluster in one run:
``Client.readinto(path)``, the read path with a planned view, the engine alone, an engine
ping, HTTP Range to the volume server, and a bare ping-pong between two processes (the
floor this machine sets for any request and answer). Prints p50/p90 in µs and writes JSON.
``--busy-poll-us 0`` turns busy polling off on both ends, to compare.

Then where a 4 KiB read's microseconds go, each piece measured alone in the same run: the
Python steps of ``Client.readinto`` without the network (the held-metadata lookup; the
plan and the engine ops; recording the outcome), the same read path with every offset in
one chunk (so one sidecar, whose busy polling is then still on for the next read: the
difference from random offsets is the sidecars' wake-ups), the engine alone, the
sidecar's own work (``pread`` of 4 KiB of the volume file from the page cache; the copy
of 4 KiB), and the floors: a TCP loopback and a socketpair ping-pong between two processes.

    .venv/bin/python benches/latency_small_reads.py [--reads 2000] [--out bench-results/small.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from seaweed_rdma import Client
from seaweed_rdma._core import RangeOp, parse_fid
from seaweed_rdma.cluster import LocalCluster

IO = 4096
FILE = "/bench/small-reads.bin"


def percentiles(fn: Callable[[int], object], offsets: list[int]) -> dict[str, float]:
    """p50/p90 (µs) of ``fn(offset)`` over ``offsets``."""
    lat = []
    for off in offsets:
        t0 = time.perf_counter()
        fn(off)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"p50_us": lat[len(lat) // 2] * 1e6, "p90_us": lat[int(len(lat) * 0.9)] * 1e6}


def interleaved(fns: dict[str, tuple[Callable[[int], object], list[int]]]
                ) -> dict[str, dict[str, float]]:
    """p50/p90 (µs) of each ``fn(offset)`` over its offsets, taken in turn call by call,
    so that every one sees the same background load (on a shared 2-core VM the load
    moves between seconds, more than the differences measured here)."""
    lat: dict[str, list[float]] = {name: [] for name in fns}
    count = min(len(offs) for _, offs in fns.values())
    for i in range(count):
        for name, (fn, offs) in fns.items():
            t0 = time.perf_counter()
            fn(offs[i])
            lat[name].append(time.perf_counter() - t0)
    out = {}
    for name, got in lat.items():
        got.sort()
        out[name] = {"p50_us": got[len(got) // 2] * 1e6, "p90_us": got[int(len(got) * 0.9)] * 1e6}
    return out


def process_ping_pong(count: int) -> dict[str, float]:
    """A 32-byte message to a child process and back, over a socketpair."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        while data := b.recv(64):
            b.sendall(data)
        os._exit(0)
    b.close()

    def round_trip(_: int) -> None:
        a.sendall(b"x" * 32)
        a.recv(64)

    try:
        return percentiles(round_trip, [0] * count)
    finally:
        a.close()
        os.waitpid(pid, 0)


def tcp_ping_pong(count: int) -> dict[str, float]:
    """A 32-byte message to a child process and back, over TCP on loopback (Nagle off):
    the sidecar's transport with nothing else in the way."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(64):
            conn.sendall(data)
        os._exit(0)
    srv.close()
    a = socket.create_connection(("127.0.0.1", port))
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def round_trip(_: int) -> None:
        a.sendall(b"x" * 32)
        a.recv(64)

    try:
        percentiles(round_trip, [0] * 100)  # warm-up
        return percentiles(round_trip, [0] * count)
    finally:
        a.close()
        os.waitpid(pid, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reads", type=int, default=2000, help="reads per layer")
    ap.add_argument("--size-mib", type=int, default=32)
    ap.add_argument("--out", default="bench-results/small-reads.json")
    ap.add_argument("--busy-poll-us", type=int, default=None,
                    help="busy polling of the sidecars and the client (default: theirs)")
    a = ap.parse_args()
    rng = random.Random(1)
    size = a.size_mib << 20
    with LocalCluster(volumes=2, volume_size_limit_mb=256) as cl:
        cl.upload(FILE, rng.randbytes(size), max_mb=4)
        busy = [] if a.busy_poll_us is None else [f"--busy-poll-us={a.busy_poll_us}"]
        for vs in cl.volume_servers:
            cl.add_sidecar(vs, extra=busy)
        client_busy = {} if a.busy_poll_us is None else {"fast_busy_poll_us": a.busy_poll_us}
        offsets = [rng.randrange(0, size - IO) // IO * IO for _ in range(a.reads)]
        with Client(cl.filer.grpc_address, sidecar=cl.sidecar_map(), transport="tcp",
                    **client_busy) as c, \
                httpx.Client() as http:
            buf = bytearray(IO)
            mv = memoryview(buf)
            view = c.view(FILE)
            chunk = view.chunks[0]  # offsets are taken within the first chunk below
            fast = c.reader.fast
            assert fast is not None
            sidecar = fast.targets(chunk)[0]
            vid, key, cookie = parse_fid(chunk.file_id)
            in_chunk = [off % chunk.size // IO * IO for off in offsets]
            volume_url = c.master.lookup(chunk.volume_id)[0]
            c.readinto(FILE, buf, 0)  # connect first
            reader = c.reader
            one_chunk = [o % chunk.size // IO * IO for o in offsets]

            def ops(o: int) -> None:
                work = reader.prepare(view, mv, o)
                todo, _ = fast._first_round(work.ranged)
                fast._attempt(todo)

            def settle(o: int) -> None:
                work = reader.prepare(view, mv, o)
                todo, _ = fast._first_round(work.ranged)
                fast._settle(fast._attempt(todo), [None], 1e-5, [])
                reader.finish(work, mv, [])
                reader.stats.count("file_reads")

            dat = next(d for vs in cl.volume_servers for d in vs.dir.glob(f"{vid}.dat"))
            fd = os.open(dat, os.O_RDONLY)
            dat_size = os.fstat(fd).st_size
            src = bytes(IO)
            http_rows = {
                "HTTP Range to the volume server": percentiles(
                    lambda o: http.get(f"{volume_url}/{chunk.file_id}",
                                       headers={"Range": f"bytes={o}-{o + IO - 1}"}),
                    in_chunk[: max(1, a.reads // 4)]),
            }
            rows = interleaved({
                "Client.readinto(path)": (lambda o: c.readinto(FILE, buf, o), offsets),
                "ReadPath.readinto(view), one sidecar": (
                    lambda o: c.reader.readinto(view, mv, o), one_chunk),
                "ReadPath.readinto(view)": (lambda o: c.reader.readinto(view, mv, o), offsets),
                "Engine.read_into (one op)": (
                    lambda o: fast.engine.read_into(
                        mv, [RangeOp(sidecar, vid, key, cookie, o, IO, 0, "")]), in_chunk),
                "Engine.ping": (lambda _: fast.engine.ping(sidecar), in_chunk),
            })
            rows.update(http_rows)
            steps = interleaved({
                "held metadata: Client.view(path)": (lambda o: c.view(FILE), offsets),
                "plan and engine ops": (ops, offsets),
                "plan, ops, outcome recorded": (settle, offsets),
                "sidecar's pread 4 KiB (cached)": (
                    lambda o: os.pread(fd, IO, o % max(IO, dat_size - IO)), offsets),
                "copy 4 KiB": (lambda o: mv.__setitem__(slice(0, IO), src), offsets),
            })
            os.close(fd)
    rows["process ping-pong (TCP loopback)"] = tcp_ping_pong(a.reads)
    rows["process ping-pong (socketpair)"] = process_ping_pong(a.reads)
    print(f"{'4 KiB read, layer':<40}{'p50 us':>10}{'p90 us':>10}")
    for name, r in rows.items():
        print(f"{name:<40}{r['p50_us']:>10.1f}{r['p90_us']:>10.1f}")
    print(f"\n{'pieces, each alone':<40}{'p50 us':>10}{'p90 us':>10}")
    for name, r in steps.items():
        print(f"{name:<40}{r['p50_us']:>10.1f}{r['p90_us']:>10.1f}")
    p50 = {k: v["p50_us"] for k, v in {**rows, **steps}.items()}
    engine = p50["Engine.read_into (one op)"]
    floor = p50["process ping-pong (TCP loopback)"]
    served = p50["sidecar's pread 4 KiB (cached)"] + p50["copy 4 KiB"]
    python = p50["ReadPath.readinto(view), one sidecar"] - engine
    split = {
        "held metadata lookup (Client.view)": p50["held metadata: Client.view(path)"],
        "Python read path: plan, ops, outcome (alone)": p50["plan, ops, outcome recorded"],
        "Python read path, rest (ReadPath one sidecar - engine - above)":
            python - p50["plan, ops, outcome recorded"],
        "engine and sidecar beyond the floor (engine - floor - pread/copy)":
            engine - floor - served,
        "sidecar's pread and a copy": served,
        "TCP loopback round trip between processes (floor)": floor,
        "both sidecars instead of one (Client.readinto - ReadPath one - view)":
            p50["Client.readinto(path)"] - p50["ReadPath.readinto(view), one sidecar"]
            - p50["held metadata: Client.view(path)"],
    }
    print(f"\nwhere Client.readinto's p50 ({p50['Client.readinto(path)']:.0f} us) goes, "
          f"by difference of the medians above (engine alone {engine:.0f} us):")
    for name, us in split.items():
        print(f"  {name:<70}{us:>8.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"io_bytes": IO, "reads": a.reads,
                                "busy_poll_us": a.busy_poll_us, "layers": rows,
                                "pieces": steps, "split_us": split}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
