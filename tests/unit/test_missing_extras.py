"""A missing optional part gives one line saying what to install and a non-zero exit, never a
traceback. Each test runs the command line in a subprocess in which the module is made
unimportable (a module of that name that raises ImportError, first on PYTHONPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(tmp_path: Path, blocked: list[str], *argv: str, code: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    block = tmp_path / "blocked"
    block.mkdir(exist_ok=True)
    for name in blocked:
        (block / f"{name}.py").write_text(f"raise ImportError('{name} blocked by a test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(block), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "seaweed_rdma.cli",
                                                     *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("blocked", [["pyfuse3"], ["trio"], ["pyfuse3", "trio"]])
def test_mount_without_its_packages(tmp_path: Path, blocked: list[str]) -> None:
    r = run(tmp_path, blocked, "mount", "-filer=127.0.0.1:1", f"-dir={tmp_path}")
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith("seaweed-rdma mount: the FUSE mount needs ")
    for name in blocked:
        assert name in line
    for needed in ("pip install 'seaweed-rdma[mount]'", "libfuse3-dev", "fuse3", "pkg-config",
                   "gcc"):
        assert needed in line


def test_mount_help_works_without_its_packages(tmp_path: Path) -> None:
    r = run(tmp_path, ["pyfuse3", "trio"], "mount", "-help")
    assert r.returncode == 0 and "--rdma.sidecar" in r.stdout


def test_bench_plot_without_matplotlib_refuses_before_running(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    r = run(tmp_path, ["matplotlib"], "bench", "-size-mib=1", f"-out={out}",
            "-plot", str(tmp_path / "b.png"))
    assert r.returncode == 1
    assert one_line(r) == ("seaweed-rdma bench: bench --plot needs matplotlib, not installed "
                           "here; install with: pip install matplotlib")
    assert not out.exists()  # nothing ran


def test_fsspec_module_without_fsspec(tmp_path: Path) -> None:
    r = run(tmp_path, ["fsspec"], code="import seaweed_rdma.fsspec")
    assert r.returncode == 1
    assert r.stderr.rstrip().splitlines()[-1] == (
        "ImportError: seaweed_rdma.fsspec: the fsspec filesystem needs fsspec, not installed "
        "here; install with: pip install 'seaweed-rdma[fsspec]'")


def test_the_package_imports_without_any_extra(tmp_path: Path) -> None:
    r = run(tmp_path, ["pyfuse3", "trio", "fsspec", "matplotlib"],
            code="import seaweed_rdma, seaweed_rdma.cli, seaweed_rdma.mount")
    assert r.returncode == 0, r.stderr


def test_doctor_names_what_is_missing(tmp_path: Path) -> None:
    r = run(tmp_path, ["pyfuse3"], "doctor")
    assert "Traceback" not in r.stderr
    assert "extra mount: the FUSE mount needs pyfuse3" in r.stdout
    assert "extra fsspec:" in r.stdout
