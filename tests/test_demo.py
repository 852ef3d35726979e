"""`seaweed-rdma demo`, the README's embedded default, end to end: it exits 0, every byte
matches over the fast path, HTTP and the mount, and nothing is left running."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FUSE_OK

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _left_running(stdout: str) -> list[str]:
    """Processes still running that belong to the demo's cluster: their command lines name
    one of the ports the demo printed (other clusters on this host are not the demo's)."""
    ports = set(re.findall(r"127\.0\.0\.1:(\d+)", stdout))
    pattern = re.compile(r"(?:-port=|127\.0\.0\.1:)(\d+)\b")
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:]
            if "weed" in line or "seaweed_rdma" in line
            if ports & set(pattern.findall(line))]


def test_demo_runs_and_cleans_up():  # type: ignore[no-untyped-def]
    r = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "demo"], capture_output=True,
                       text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all bytes match" in r.stdout
    assert "fell back to HTTP 0 times" in r.stdout
    if FUSE_OK:
        cats = [line for line in r.stdout.splitlines() if line.strip().startswith("cat ")]
        assert len(cats) == 5 and all(line.rstrip().endswith("ok") for line in cats), cats
        assert "unmounted" in r.stdout
    assert not _left_running(r.stdout), "the demo left processes running"
    mounts = Path("/proc/mounts").read_text()
    assert "seaweed-rdma-mnt-" not in mounts, "the demo left its mount behind"
