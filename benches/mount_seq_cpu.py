"""Where a sequential read through the mounts spends its time: fio psync 1 MiB reads of a
256 MiB file through `seaweed-rdma mount` and `weed mount` (same wheel, same cluster),
alternating, with the CPU seconds each process used (the mount, the sidecar, the volume
servers) and the whole machine's busy and system time, and for our mount the native read
loop's counters (READs, average size, time in the engine and in the reply per READ, most
READs at once). ``--warm`` leaves the volume files in the page cache (fio still drops the
mount's own pages), so the disk is out of the picture. Each round also measures the
layers under the mounts on the same file: the disk alone (a plain file of the same size
on the volume servers' disk, the same fio job; not with ``--warm``) and the engine alone
(``Client.readinto`` of 1 MiB blocks by 4 threads, no FUSE), so what the mount costs shows
beside what it cannot beat. The disk's own limit is measured too, each round (issue 26):
the same file read with O_DIRECT and 32 requests of 1 MiB in flight (fio, libaio), and
the mount's figure is printed as a share of it. Every row also says how many reads the
disk had in flight on average while it ran (``/proc/diskstats``: time spent reading over
wall time), so a reader that leaves the disk's queue shallow shows. With ``--warm`` the
mount's figure is printed as a share of the engine alone's in the same round (issue 26:
goal 0.9). Extra arguments go to our mount.

    .venv/bin/python benches/mount_seq_cpu.py [--rounds 2] [--size-mib 256] [--warm]
        [-- -rdma.nativeThreads=2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from bench_mount import MIB, drop_caches, fio, start_mount, unmount
from seaweed_rdma.client import Client
from seaweed_rdma.cluster import LocalCluster, find_weed

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine() -> tuple[float, float]:
    """Busy and system CPU seconds of the whole machine."""
    v = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return (sum(v) - v[3] - v[4]) / TICK, v[2] / TICK


def disk_reads(path: Path) -> tuple[float, float]:
    """Milliseconds spent reading (summed over requests in flight) and bytes read so far by
    the block device holding ``path`` (``/proc/diskstats``); zeros when it is not listed."""
    dev = os.stat(path).st_dev
    want = (os.major(dev), os.minor(dev))
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if (int(f[0]), int(f[1])) == want:
            return float(f[6]), int(f[5]) * 512.0
    return 0.0, 0.0


class DiskWatch:
    """Reads in flight on ``path``'s disk, on average, and bytes read, over a ``with``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queue = 0.0
        self.bytes = 0.0

    def __enter__(self) -> DiskWatch:
        self.t0 = time.monotonic()
        self.ms0, self.b0 = disk_reads(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        ms, b = disk_reads(self.path)
        self.queue = (ms - self.ms0) / max(1e-3, (time.monotonic() - self.t0) * 1000)
        self.bytes = b - self.b0


def disk_limit(path: Path, size: int) -> float:
    """Bytes per second the disk gives ``path`` read once in order with O_DIRECT and 32
    requests of 1 MiB in flight (fio, libaio): the most any reader of that disk can get."""
    args = ["fio", "--name=limit", f"--filename={path}", "--ioengine=libaio", "--direct=1",
            "--iodepth=32", "--rw=read", "--bs=1M", f"--size={size}", "--readonly",
            "--output-format=json"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["jobs"][0]["read"]["bw_bytes"])


def engine_alone(client: Client, path: str, size: int, readers: int = 4) -> float:
    """Bytes per second reading ``path`` in 1 MiB blocks, in order, by ``readers`` threads
    through ``Client.readinto``: the fast path with no FUSE in the way."""
    blocks = iter(range(0, size, MIB))
    lock = threading.Lock()

    def work() -> None:
        buf = bytearray(MIB)
        while True:
            with lock:
                offset = next(blocks, None)
            if offset is None:
                return
            client.readinto(path, buf, offset)

    threads = [threading.Thread(target=work) for _ in range(readers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return size / (time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="keep volume files cached")
    ap.add_argument("--size-mib", type=int, default=256, help="the file's size")
    ap.add_argument("--out", default="bench-results/mount-seq-cpu.json")
    ap.add_argument("--without-read-ahead", action="store_true",
                    help="also read through a second mount of ours with its native "
                         "read-ahead off (-rdma.readAheadMiB=0), for before/after in one run")
    ap.add_argument("mount_args", nargs="*")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl, \
            tempfile.TemporaryDirectory() as tmp:
        sc = cl.add_sidecar(cl.volume_servers)
        rng = random.Random(0)
        size = a.size_mib * MIB
        data = b"".join(rng.randbytes(min(16 * MIB, size - at)) for at in range(0, size, 16 * MIB))
        cl.upload("/bench/file.bin", data, max_mb=4)
        vol_dir = cl.volume_servers[0].dir
        disk_file = vol_dir / "disk-alone.bin"
        if not a.warm:
            disk_file.write_bytes(data)
        del data
        client = Client(cl.filer.grpc_address, sidecar=sc.address, master=cl.master.address)
        argv = {"seaweed-rdma": [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                                 f"-filer={cl.filer.grpc_address}", "-rdma.enabled",
                                 f"-rdma.sidecar={sc.address}", "-cacheMetaTtlSec=60",
                                 *a.mount_args],
                "weed mount": [find_weed(), "mount", f"-filer={cl.filer.grpc_address}"]}
        if a.without_read_ahead:
            argv["ours, no RA"] = [*argv["seaweed-rdma"], "-rdma.readAheadMiB=0"]
        procs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
        logs: list[IO[bytes]] = []
        try:
            for name, cmd in argv.items():
                procs[name] = start_mount(name, cmd, tmp, logs)
            for r in range(a.rounds):
                layers: dict[str, float] = {}
                steps = {"engine alone": lambda: engine_alone(client, "/bench/file.bin", size)}
                if not a.warm:
                    # Drops the caches first, so the volume files are cold for the engine too.
                    steps = {"disk limit": lambda: disk_limit(disk_file, size),
                             "disk alone": lambda: fio(disk_file, "read", "1m", 1, None,
                                                       size)["bw_bytes"],
                             **steps}
                for layer, step in steps.items():
                    if not a.warm:
                        drop_caches()
                    with DiskWatch(vol_dir) as dw:
                        bw = layers[layer] = step()
                    rows.append({"mount": layer, "round": r + 1, "MB/s": bw / 1e6,
                                 "disk_queue": dw.queue, "disk_MB": dw.bytes / 1e6})
                    print(f"{layer:13s} round {r + 1}: {bw / 1e6:7.1f} MB/s (disk: "
                          f"{dw.queue:.1f} reads in flight, {dw.bytes / 1e6:.0f} MB read)",
                          flush=True)
                for name, (mnt, proc) in procs.items():
                    if not a.warm:
                        drop_caches()
                    parts = {"mount": [proc.pid], "sidecar": [sc.proc.pid],
                             "volume servers": [v.proc.pid for v in cl.volume_servers]}
                    before = {k: sum(map(cpu_seconds, p)) for k, p in parts.items()}
                    busy0, sys0 = machine()
                    t0 = time.monotonic()
                    with DiskWatch(vol_dir) as dw:
                        got = fio(mnt / "bench" / "file.bin", "read", "1m", 1, None, size)
                    wall = time.monotonic() - t0
                    busy1, sys1 = machine()
                    row = {"mount": name, "round": r + 1, "MB/s": got["bw_bytes"] / 1e6,
                           "fio_p50_us": got["lat_p50_us"], "wall_s": wall,
                           "machine_busy_s": busy1 - busy0, "machine_sys_s": sys1 - sys0,
                           "disk_queue": dw.queue, "disk_MB": dw.bytes / 1e6,
                           "cpu_s": {k: sum(map(cpu_seconds, p)) - before[k]
                                     for k, p in parts.items()}}
                    if name != "weed mount":
                        st = json.loads(os.getxattr(mnt, "user.seaweed_rdma.stats"))
                        row["native_reads"] = st["native_reads"]
                        row["read_ahead"] = st.get("native_read_ahead")
                    rows.append(row)
                    cpu = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_s"].items())
                    if "disk limit" in layers:
                        row["of_disk_limit"] = got["bw_bytes"] / layers["disk limit"]
                        cpu += f"; {row['of_disk_limit']:.2f} of the disk limit"
                    else:
                        row["of_engine_alone"] = got["bw_bytes"] / layers["engine alone"]
                        cpu += f"; {row['of_engine_alone']:.2f} of the engine alone"
                    cpu += f"; disk: {dw.queue:.1f} reads in flight, {dw.bytes / 1e6:.0f} MB"
                    ra = row.get("read_ahead")
                    if ra and ra["windows"]:
                        cpu += (f"; read-ahead (cumulative) {ra['hits']} hits, {ra['misses']}"
                                f" misses, most held {ra['most_held'] >> 20} MiB")
                    print(f"{name:13s} round {r + 1}: {row['MB/s']:7.1f} MB/s, machine busy "
                          f"{row['machine_busy_s']:.2f} s of {2 * wall:.2f} (sys "
                          f"{row['machine_sys_s']:.2f}); cpu s: {cpu}", flush=True)
            engine = client.stats()["fast"]["bytes"]
        finally:
            client.close()
            for mnt, proc in procs.values():
                unmount(mnt, proc)
            for log in logs:
                log.close()
    print(f"engine alone carried {engine} bytes over the fast path")
    native = [r["native_reads"] for r in rows if r.get("native_reads")]
    if native and native[-1]:
        n = native[-1]
        reads = max(1, n["reads"])
        print(f"native loop (cumulative): {n['reads']} READs of {n['bytes'] / reads / 1024:.0f}"
              f" KiB on average; per READ {n['engine_us'] / reads:.0f} us in the engine, "
              f"{n['reply_us'] / reads:.0f} us replying; at most {n['most_at_once']} at once")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"warm": a.warm, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
