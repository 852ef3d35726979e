#!/usr/bin/env bash
# POSIX conformance of seaweed-rdma mount beside weed mount (issue 24): builds pjdfstest with
# the shared script, then runs ci/conformance.py, which mounts both on one throwaway
# cluster and fails on any subtest that fails on our mount and passes on weed mount.
#
#   ci/conformance.sh [--fast] [--dirs chmod,link,...]   (--fast: ours with a sidecar)
#
# SEAWEED_RDMA_CONFORMANCE=0 skips it; it skips, saying why, where /dev/fuse or the
# shared pjdfstest tree is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
if [ "${SEAWEED_RDMA_CONFORMANCE:-1}" = 0 ]; then
    echo "[conformance] skipped (SEAWEED_RDMA_CONFORMANCE=0)"; exit 0
fi
pjd=${PJDFSTEST_SH:-$PWD/../shared/conformance/pjdfstest.sh}
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
    echo "[conformance] skipped: needs /dev/fuse and fusermount3"; exit 0
fi
if [ ! -x "$pjd" ]; then
    echo "[conformance] skipped: no pjdfstest.sh at $pjd (set PJDFSTEST_SH)"; exit 0
fi
build=${PJD_BUILD:-${TMPDIR:-/tmp}/pjdfstest-build}
if [ ! -x "$build/pjdfstest" ]; then  # the shared script builds it on its first run
    scratch=$(mktemp -d)
    PJD_BUILD=$build bash "$pjd" "$scratch" __build_only__ >/dev/null 2>&1 || true
    rmdir "$scratch" 2>/dev/null || true
fi
[ -x "$build/pjdfstest" ] || { echo "[conformance] pjdfstest did not build in $build"; exit 1; }
exec python ci/conformance.py --build "$build" "$@"
