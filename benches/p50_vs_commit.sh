#!/usr/bin/env bash
# The 4 KiB random-read p50 of `seaweed-rdma bench` for this checkout and for an older
# commit, built side by side and run alternately on the same machine, so a claim of "no
# regression" compares like with like (this VM's latencies swing 2x from hour to hour, so a
# figure from another day says little).
#
#   benches/p50_vs_commit.sh <commit> [runs=3] [reads=3000]
#
# Builds <commit> into its own venv under ${WORK:-/tmp/p50-ab} (a release build, a few
# minutes), uses .venv for this checkout, and prints p50/p90 per run and the medians.
set -euo pipefail
commit=${1:?usage: benches/p50_vs_commit.sh <commit> [runs] [reads]}
runs=${2:-3}
reads=${3:-3000}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/p50-ab}
if [ ! -x "$here/.venv/bin/seaweed-rdma" ]; then
    echo "no .venv with this checkout built: run ci/install.sh first" >&2
    exit 1
fi
rev=$(git -C "$here" rev-parse --verify "$commit^{commit}")
mkdir -p "$work"
# The build is reused only for the same commit; another one in the same WORK rebuilds.
if [ "$(cat "$work/built" 2>/dev/null)" != "$rev" ] || [ ! -x "$work/venv/bin/seaweed-rdma" ]; then
    rm -rf "$work/src" "$work/venv" "$work/built" && mkdir -p "$work/src"
    git -C "$here" archive "$rev" | tar -x -C "$work/src"
    python3 -m venv "$work/venv"
    CARGO_TARGET_DIR="$work/target" "$work/venv/bin/pip" install -q "$work/src"
    echo "$rev" >"$work/built"
fi
# Older trees looked for `weed` beside their own interpreter only.
WEED_BIN=${WEED_BIN:-$("$here/.venv/bin/python" -c \
    'from seaweed_rdma.cluster import find_weed; print(find_weed())')}
export WEED_BIN
for i in $(seq "$runs"); do
    for side in old new; do
        bin="$here/.venv/bin/seaweed-rdma"
        [ "$side" = old ] && bin="$work/venv/bin/seaweed-rdma"
        log="$work/$side-$i.log"
        if ! (cd "$work" && "$bin" bench --size-mib 64 --rounds 1 --random-reads "$reads" \
                --quiet --out "$work/$side-$i.json" >"$log" 2>&1); then
            echo "bench failed ($side, run $i); the end of $log:" >&2
            tail -n 5 "$log" >&2
            exit 1
        fi
    done
done
python3 - "$work" "$runs" "$commit" <<'EOF'
import json, statistics, sys
work, runs, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for side, name in (("old", commit), ("new", "this checkout")):
    p50 = []
    for i in range(1, runs + 1):
        with open(f"{work}/{side}-{i}.json") as f:
            row = json.load(f)["random_4k"]["fast_tcp"]
        p50.append(row["p50_us"])
        print(f"{name:>14s} run {i}: p50 {row['p50_us']:7.1f} us, p90 {row['p90_us']:7.1f} us")
    print(f"{name:>14s} median p50: {statistics.median(p50):.1f} us")
EOF
