"""Where a 4 KiB read's time goes, layer by layer, on one embedded cluster in one run:
``Client.readinto(path)``, the read path with a planned view, the engine alone, an engine
ping, HTTP Range to the volume server, and a bare ping-pong between two processes (the
floor this machine sets for any request and answer). Prints p50/p90 in µs and writes JSON.
``--busy-poll-us 0`` turns busy polling off on both ends, to compare.

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
            rows = {
                "Client.readinto(path)": percentiles(lambda o: c.readinto(FILE, buf, o), offsets),
                "ReadPath.readinto(view)": percentiles(
                    lambda o: c.reader.readinto(view, mv, o), offsets),
                "Engine.read_into (one op)": percentiles(
                    lambda o: fast.engine.read_into(
                        mv, [RangeOp(sidecar, vid, key, cookie, o, IO, 0, "")]), in_chunk),
                "Engine.ping": percentiles(lambda _: fast.engine.ping(sidecar), in_chunk),
                "HTTP Range to the volume server": percentiles(
                    lambda o: http.get(f"{volume_url}/{chunk.file_id}",
                                       headers={"Range": f"bytes={o}-{o + IO - 1}"}),
                    in_chunk[: max(1, a.reads // 4)]),
            }
    rows["process ping-pong (socketpair)"] = process_ping_pong(a.reads)
    print(f"{'4 KiB read, layer':<36}{'p50 us':>10}{'p90 us':>10}")
    for name, r in rows.items():
        print(f"{name:<36}{r['p50_us']:>10.1f}{r['p90_us']:>10.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"io_bytes": IO, "reads": a.reads,
                                "busy_poll_us": a.busy_poll_us, "layers": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
