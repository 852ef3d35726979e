"""pandas reading a parquet file, as a notebook's first cell does, on one embedded cluster:
each way in a fresh process (imports done before the clock starts, so only the call and
whatever it sets up are timed), first call and best of three more:

- ``http``: a filer GET of the whole file, then ``pd.read_parquet`` of the bytes;
- ``seaweedfs``: ``pd.read_parquet("seaweedfs://...")`` over the fast path;
- ``ours`` / ``weed_mount``: ``pd.read_parquet`` of the file through each mount (page
  cache dropped first; each mount freshly started); before it, the mount's first read of
  another file of the same size (``first_read``: open and read it whole in 1 MiB reads, in
  a fresh process, no pandas), which is what the mount itself adds to a first call.

Prints seconds and ratios (http / way: above 1 is faster than HTTP) and writes JSON.

    .venv/bin/python benches/pandas_first_call.py [--rows 2000000] [--no-mounts]
        [--out bench-results/pandas.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from seaweed_rdma.cluster import LocalCluster, find_weed
from small_files import drop_caches, mount, unmount

CHILD = textwrap.dedent("""
    import io, json, sys, time
    import httpx, pandas as pd, fsspec, seaweed_rdma.fsspec  # imports are not timed
    way, target, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    def once():
        if way == "http":
            return pd.read_parquet(io.BytesIO(httpx.get(target, timeout=60).content))
        if way == "seaweedfs":
            return pd.read_parquet(target, storage_options=opts)
        return pd.read_parquet(target)

    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        df = once()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first": times[0], "best_of_rest": min(times[1:]), "rows": len(df)}))
""")


READ_CHILD = textwrap.dedent("""
    import json, os, sys, time
    t0 = time.perf_counter()
    fd = os.open(sys.argv[1], os.O_RDONLY)
    n = 0
    while True:
        got = os.read(fd, 1 << 20)
        if not got:
            break
        n += len(got)
    os.close(fd)
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": n}))
""")


def first_read(path: Path) -> float:
    """Seconds a fresh process takes to open and read ``path`` whole."""
    r = subprocess.run([sys.executable, "-c", READ_CHILD, str(path)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"first read of {path}: {r.stderr[-2000:]}")
    return float(json.loads(r.stdout.strip().splitlines()[-1])["seconds"])


def run(way: str, target: str, opts: dict[str, Any]) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", CHILD, way, target, json.dumps(opts)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{way}: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--no-mounts", action="store_true")
    ap.add_argument("--out", default="bench-results/pandas.json")
    a = ap.parse_args()
    import pandas as pd

    out: dict[str, Any] = {}
    with LocalCluster(volumes=1) as cl, tempfile.TemporaryDirectory() as tmp:
        cl.start()
        sc = cl.add_sidecar(cl.volume_servers[0])
        df = pd.DataFrame({"id": range(a.rows), "k": [i % 97 for i in range(a.rows)],
                           "v": [i * 0.25 for i in range(a.rows)]})
        local = Path(tmp) / "t.parquet"
        df.to_parquet(local, row_group_size=250_000)
        cl.upload("/bench/pd/t.parquet", local.read_bytes(), max_mb=4)
        cl.upload("/bench/pd/other.parquet", local.read_bytes(), max_mb=4)
        out["file_bytes"] = local.stat().st_size
        opts = {"sidecar": cl.sidecar_map(), "transport": "tcp"}
        drop_caches()
        out["http"] = run("http", f"{cl.filer.url}/bench/pd/t.parquet", {})
        drop_caches()
        out["seaweedfs"] = run("seaweedfs",
                               f"seaweedfs://{cl.filer.grpc_address}/bench/pd/t.parquet", opts)
        if not a.no_mounts:
            argvs = {
                "ours": [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                         f"-filer={cl.filer.grpc_address}", "-rdma.enabled",
                         f"-rdma.sidecar={sc.address}"],
                "weed_mount": [find_weed(), "mount", f"-filer={cl.filer.grpc_address}"],
            }
            for name, argv in argvs.items():
                drop_caches()
                where = Path(tempfile.mkdtemp(dir=tmp))
                mnt, proc, log = mount(name, argv, where, "/bench/pd/t.parquet")
                try:
                    drop_caches()
                    raw = first_read(mnt / "bench/pd/other.parquet")
                    drop_caches()
                    out[name] = {**run(name, str(mnt / "bench/pd/t.parquet"), {}),
                                 "first_read": raw}
                finally:
                    unmount(mnt, proc, log)
    base = out["http"]
    print(f"parquet file of {out['file_bytes'] / 1e6:.1f} MB, {a.rows} rows")
    for way in ("http", "seaweedfs", "ours", "weed_mount"):
        if way in out:
            r = out[way]
            print(f"  {way:10s} first {r['first']:6.3f} s ({base['first'] / r['first']:4.2f}x)"
                  f"   repeated {r['best_of_rest']:6.3f} s "
                  f"({base['best_of_rest'] / r['best_of_rest']:4.2f}x)")
    if "ours" in out and "weed_mount" in out:
        ours, weed = out["ours"]["first_read"], out["weed_mount"]["first_read"]
        print(f"  a mount's first read of a {out['file_bytes'] / 1e6:.1f} MB file (fresh "
              f"process, no pandas): ours {ours:.3f} s, weed mount {weed:.3f} s "
              f"({weed / ours:4.2f}x)")
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
