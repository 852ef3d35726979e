"""The command line against a real cluster: every subcommand takes ``weed``'s one-dash
spelling as well as two dashes (``-filer=H:P``, ``-filer H:P``, ``--filer=H:P``,
``--filer H:P``), the sidecar included; and ``demo`` without the mount's packages skips its
mount part with one line instead of reporting a mismatch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from seaweed_rdma.cluster import LocalCluster, free_port

pytestmark = pytest.mark.cluster

DATA = random.Random(13).randbytes(300_000)


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", *argv],
                          capture_output=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def filer(cluster: LocalCluster) -> str:
    cluster.upload("/spell/a.bin", DATA)
    return cluster.filer.grpc_address


def spellings(name: str, value: str) -> list[list[str]]:
    return [[f"-{name}={value}"], [f"-{name}", value], [f"--{name}={value}"],
            [f"--{name}", value]]


@pytest.mark.parametrize("form", range(4))
def test_cat(filer: str, form: int) -> None:
    r = cli("cat", *spellings("filer", filer)[form], *spellings("offset", "1000")[form],
            "/spell/a.bin", *spellings("size", "5000")[form])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == DATA[1000:6000]


def test_ls_and_stat_one_dash(filer: str) -> None:
    r = cli("ls", f"-filer={filer}", "-l", "/spell")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split()[-2:] == [str(len(DATA)), "a.bin"]
    r = cli("stat", "-filer", filer, "/spell/a.bin")
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["size"] == len(DATA)


def test_sidecar_and_fast_path_cat_one_dash(cluster: LocalCluster, filer: str,
                                            tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    log = open(tmp_path / "sidecar.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "seaweed_rdma.cli", "sidecar",
         *(f"-dir={vs.dir}" for vs in cluster.volume_servers), "-listen",
         f"127.0.0.1:{port}", f"-master={cluster.master.address}", "-http",
         f"127.0.0.1:{http_port}", "-transport=tcp"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "sidecar.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the sidecar did not come up"
            time.sleep(0.1)
        r = cli("cat", f"-filer={filer}", f"-sidecar=127.0.0.1:{port}", "-transport", "tcp",
                "-stats", "/spell/a.bin")
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == DATA
        stats = json.loads(r.stderr)
        assert stats["fast"]["bytes"] >= len(DATA) and stats["fallbacks"] == 0
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_demo_without_the_mount_packages(tmp_path: Path) -> None:
    block = tmp_path / "blocked"
    block.mkdir()
    (block / "pyfuse3.py").write_text("raise ImportError('pyfuse3 blocked by a test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(block), env.get("PYTHONPATH")) if p)
    r = cli("demo", env=env, timeout=600)
    out = r.stdout.decode()
    assert r.returncode == 0, out[-3000:] + r.stderr.decode()[-3000:]
    assert "mount: skipped: the FUSE mount needs pyfuse3" in out
    assert "pip install 'seaweed-rdma[mount]'" in out
    assert "did not come up" not in out and "MISMATCH" not in out
    assert "all bytes match" in out
