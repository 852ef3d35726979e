"""Random 4 KiB reads from trio tasks through ``ReadPath.readinto_async`` (the path the
mount takes, without FUSE), reads per second with 1 and 4 tasks, on an embedded cluster.
``--compare`` also runs each with polled batches turned off (every read submitted to the
engine's threads, as before ``Engine.start_polled``), alternating, to show what they save.
Prints a table and writes JSON.

    .venv/bin/python benches/trio_small_reads.py [--secs 5] [--rounds 2] [--compare]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import trio

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

MIB = 1 << 20
IO = 4096
FILE = "/bench/trio.bin"


class _Submitted:
    """The engine with ``start_polled`` declining every batch."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def start_polled(self, *_: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def reads_per_second(client: Client, tasks: int, secs: float, size: int) -> float:
    view = client.view(FILE)

    async def off_loop(fn: Any) -> Any:
        return await trio.to_thread.run_sync(fn)

    done = 0

    async def worker(seed: int, stop: float) -> None:
        nonlocal done
        rng = random.Random(seed)
        buf = memoryview(bytearray(IO))
        while time.monotonic() < stop:
            off = rng.randrange(0, size - IO) // IO * IO
            await client.reader.readinto_async(view, buf, off, off_loop)
            done += 1

    async def main() -> None:
        stop = time.monotonic() + secs
        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                nursery.start_soon(worker, i, stop)

    trio.run(main)
    return done / secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--compare", action="store_true",
                    help="also measure with polled batches off, alternating")
    ap.add_argument("--out", default="bench-results/trio-small-reads.json")
    a = ap.parse_args()
    size = a.size_mib * MIB
    modes = ["polled", "submitted"] if a.compare else ["polled"]
    runs: dict[str, dict[int, list[float]]] = {m: {1: [], 4: []} for m in modes}
    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl:
        sidecar = cl.add_sidecar(cl.volume_servers)
        rng = random.Random(0)
        cl.upload(FILE, b"".join(rng.randbytes(16 * MIB) for _ in range(a.size_mib // 16)),
                  max_mb=4)
        with Client(cl.filer.grpc_address, sidecar=sidecar.address, transport="tcp",
                    meta_ttl=3600) as c:
            fast = c.reader.fast
            assert fast is not None
            engine = fast.engine
            c.read(FILE, 0, 16)  # the first lane connection is made outside the loop
            for _ in range(a.rounds):
                for mode in modes:
                    fast.engine = engine if mode == "polled" else _Submitted(engine)  # type: ignore[assignment]
                    for tasks in (1, 4):
                        runs[mode][tasks].append(reads_per_second(c, tasks, a.secs, size))
            fast.engine = engine
            st = c.stats()
    print(f"{'mode':12s}{'tasks':>6s}{'reads/s (each round)':>34s}")
    for mode, by_tasks in runs.items():
        for tasks, values in by_tasks.items():
            shown = ", ".join(f"{v:,.0f}" for v in values)
            print(f"{mode:12s}{tasks:>6d}{shown:>34s}")
    print(f"engine: {st['engine']['polled_batches']} polled of {st['engine']['batches']} "
          f"batches; HTTP bytes {st['http']['bytes']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"reads_per_s": runs, "secs": a.secs, "io_bytes": IO,
                               "engine": st["engine"]}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
