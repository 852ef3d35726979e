#!/usr/bin/env bash
# The whole test suite: installs what it needs, then Rust checks and tests, Python lint,
# and pytest against real SeaweedFS clusters and FUSE mounts; then the verbs suite on
# soft-RoCE in a qemu guest (ci/guest.sh; it skips, saying why, where qemu cannot run, and
# SEAWEED_RDMA_GUEST=0 skips it on purpose).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "[test] cargo fmt / clippy"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
echo "[test] cargo test"
cargo test --quiet 2>&1 | tail -n 40
echo "[test] ruff, mypy, stubtest"
ruff check python tests benches
mypy
python -m mypy.stubtest seaweed_rdma._core
echo "[test] pytest"
python -m pytest -q -p no:cacheprovider "$@"
echo "[test] POSIX conformance beside weed mount (ci/conformance.sh)"
# Ours with the fast path (a sidecar), as users run it: the native loop answers what it
# can, and lookups offer files to it, so its rules are under the suite too.
bash ci/conformance.sh --fast
echo "[test] verbs suite on soft-RoCE (ci/guest.sh)"
bash ci/guest.sh
