"""`seaweed-rdma bench` end to end on the embedded cluster, tiny sizes (timings not checked)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_bench_writes_table_json_and_plot(tmp_path):  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    r = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "bench", "--size-mib", "8",
                        "--chunk-mib", "1", "--rounds", "1", "--random-reads", "50",
                        "--out", str(out), "--plot", str(png)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "/ filer GET" in r.stdout and "http_volume" in r.stdout
    assert "sequential, fast path over tcp" in r.stderr  # progress lines
    res = json.loads(out.read_text())
    assert {"fast_tcp", "fast_tcp_read", "fast_tcp_whole", "fsspec_cat_tcp", "fast_tcp_verify",
            "http_volume", "http_filer"} <= set(res["sequential_bytes_per_s"])
    tcp = res["fast_stats"]["tcp"]
    assert tcp["fast"]["bytes"] > 0 and tcp["fallbacks"] == 0 and tcp["transport"] == "tcp"
    if res["verbs_unavailable"]:
        assert "verbs: not measured here" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
