"""The wheel: built by maturin, installed into a clean venv, imported on a host where
libibverbs.so.1 is hidden, and reading a file over tcp from the real cluster; and the same
wheel, with its extras, under the oldest CPython it claims (3.9)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
IBVERBS = Path("/usr/lib/x86_64-linux-gnu/libibverbs.so.1")


def oldest_python() -> str | None:
    """A CPython 3.9 to install the wheel into: ``SEAWEED_RDMA_PYTHON39``, ``python3.9`` on
    PATH, or a pyenv build."""
    candidates = [os.environ.get("SEAWEED_RDMA_PYTHON39", ""), shutil.which("python3.9") or "",
                  *sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.9*/bin/python"))]
    for c in candidates:
        if not c or not os.access(c, os.X_OK):
            continue
        # A pyenv shim answers to the name without a 3.9 behind it: ask the interpreter.
        r = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.strip() == "True":
            return c
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("wheel")
    maturin = Path(sys.executable).parent / "maturin"
    r = subprocess.run([str(maturin), "build", "-q", "-o", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    wheels = list(out.glob("seaweed_rdma-*.whl"))
    assert len(wheels) == 1, wheels
    assert "abi3" in wheels[0].name and "manylinux" in wheels[0].name, wheels[0].name
    return wheels[0]


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory):  # type: ignore[no-untyped-def]
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def test_the_wheel_is_one_an_index_accepts(wheel):  # type: ignore[no-untyped-def]
    """PyPI takes manylinux (not linux_x86_64) wheels; auditwheel must agree with the tag
    maturin gave, and find no library outside the manylinux policy to bundle."""
    auditwheel = Path(sys.executable).parent / "auditwheel"
    if not auditwheel.exists():
        pytest.skip("auditwheel not installed (ci/requirements.txt installs it)")
    r = subprocess.run([str(auditwheel), "show", str(wheel)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert 'consistent with the following platform tag: "manylinux' in text, text
    # One wheel for every CPython >= 3.9 (pyo3's abi3-py39, requires-python >= 3.9).
    assert "-cp39-abi3-" in wheel.name, wheel.name
    assert "libibverbs" not in text, "libibverbs must stay loaded at run time, not linked"


def test_extension_does_not_link_libibverbs(clean_venv):  # type: ignore[no-untyped-def]
    if not shutil.which("readelf"):
        pytest.skip("readelf not installed")
    so = next(clean_venv.glob("lib/python*/site-packages/seaweed_rdma/_core*.so"))
    dynamic = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True,
                             check=True).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed and not any("ibverbs" in n or "rdmacm" in n for n in needed), needed


def test_import_and_read_without_libibverbs(clean_venv, cluster, sidecars, shapes):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0 or not shutil.which("unshare") or not IBVERBS.exists():
        pytest.skip("needs root, unshare and an installed libibverbs to hide")
    s = shapes["multi_chunk"]
    script = (
        "import ctypes, json, sys\n"
        "try:\n"
        "    ctypes.CDLL('libibverbs.so.1'); print('LIBIBVERBS STILL LOADABLE'); sys.exit(3)\n"
        "except OSError:\n"
        "    pass\n"
        "import seaweed_rdma\n"
        f"c = seaweed_rdma.Client({cluster.filer.grpc_address!r}, "
        f"sidecar={sidecars!r}, transport='auto')\n"
        f"data = c.read({s.path!r})\n"
        "st = c.stats()\n"
        "print(json.dumps({'len': len(data), 'sha': __import__('hashlib').sha256(data)"
        ".hexdigest(), 'fast': st['fast']['bytes'], 'http': st['http']['bytes'], "
        "'transport': st['transport']}))\n"
    )
    # A private mount namespace in which libibverbs.so.1 is an empty file.
    hide = (f"mount --bind /dev/null {IBVERBS} && "
            f"cd / && {clean_venv}/bin/python -c \"$SCRIPT\"")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", hide],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SCRIPT": script})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["len"] == len(s.data)
    assert got["sha"] == hashlib.sha256(s.data).hexdigest()
    assert got["transport"] == "tcp" and got["fast"] == len(s.data) and got["http"] == 0


def test_fresh_install_without_extras_says_what_to_install(clean_venv, tmp_path):  # type: ignore[no-untyped-def]
    """The wheel alone, as a new user installs it: the mount names its extra and pyfuse3's
    build packages in one line instead of a ModuleNotFoundError."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(clean_venv / "bin" / "seaweed-rdma"), "mount", "-filer=127.0.0.1:1",
                        f"-dir={tmp_path}"], capture_output=True, text=True, timeout=120,
                       env=env, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "pip install 'seaweed-rdma[mount]'" in r.stderr and "libfuse3-dev" in r.stderr


PY39_SCRIPT = """
import hashlib, importlib, json, pkgutil, sys
import seaweed_rdma
# Every module, the mount's and fsspec's included, must import under the oldest CPython.
for m in pkgutil.walk_packages(seaweed_rdma.__path__, "seaweed_rdma."):
    importlib.import_module(m.name)
filer, sidecars, path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
with seaweed_rdma.Client(filer, sidecar=sidecars, transport="tcp") as c:
    data = c.read(path)
    part = c.read(path, 1_000_000, 70_000)
    st = c.stats()
print(json.dumps({"version": list(sys.version_info[:2]), "len": len(data),
                  "sha": hashlib.sha256(data).hexdigest(),
                  "part": hashlib.sha256(part).hexdigest(),
                  "fast": st["fast"]["bytes"], "http": st["http"]["bytes"]}))
"""


def test_the_wheel_and_its_extras_work_under_cpython_3_9(wheel, cluster, sidecars, shapes,  # type: ignore[no-untyped-def]
                                                         tmp_path):
    """The abi3 wheel claims every CPython >= 3.9: installed with its extras into a 3.9
    venv, every module imports and a file comes over the fast path, right."""
    py39 = oldest_python()
    if py39 is None:
        pytest.skip("no CPython 3.9 here (set SEAWEED_RDMA_PYTHON39, or put python3.9 on PATH)")
    venv = tmp_path / "venv39"
    subprocess.run([py39, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[mount,fsspec]"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = shapes["multi_chunk"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(venv / "bin" / "python"), "-c", PY39_SCRIPT,
                        cluster.filer.grpc_address, json.dumps(sidecars), s.path],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["version"] == [3, 9], got
    assert got["len"] == len(s.data) and got["sha"] == hashlib.sha256(s.data).hexdigest()
    assert got["part"] == hashlib.sha256(s.data[1_000_000:1_070_000]).hexdigest()
    assert got["fast"] == len(s.data) + 70_000 and got["http"] == 0, got
