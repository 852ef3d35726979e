#!/usr/bin/env bash
# Installs everything seaweed-rdma needs on a fresh Debian machine (as root) and builds it
# into ./.venv. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config libibverbs-dev librdmacm-dev libclang-dev clang
              rdma-core ibverbs-utils iproute2 fio iperf3 kmod
              git rsync sqlite3 autoconf automake libtool make gcc perl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "[install] apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "[install] cargo (Rust toolchain) is required" >&2; exit 1; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[install] creating .venv"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r ci/requirements.txt

# Tests build in debug (sharing artifacts with `cargo test`); the demo and benches ask for
# an optimised build with SEAWEED_RDMA_RELEASE=1.
profile=()
[ "${SEAWEED_RDMA_RELEASE:-0}" = "1" ] && profile=(--release)
echo "[install] building the Rust engine (maturin develop ${profile[*]:-})"
.venv/bin/maturin develop "${profile[@]}" -q 2>&1 | grep -vE "Requirement already satisfied" || true
.venv/bin/python -c "import seaweed_rdma, sys; print('[install] seaweed_rdma', seaweed_rdma.__version__)"
