#!/bin/bash
# Benches inside the soft-RoCE guest (called by inside.sh after the tests): perftest
# ib_write_bw / ib_read_bw between rxe1 and rxe0 (across the veth pair), then
# `seaweed-rdma bench` (fast path over verbs and tcp, HTTP) with its sidecars on rxe0 and its
# clients on rxe1, the same link. Writes OUT/perftest.json, OUT/bench.json and prints the
# ratio of fast_verbs to ib_write_bw. Numbers from rxe under emulation are for ratios within
# one run, not for hardware.
set -uo pipefail
out=${1:?usage: bench.sh OUT_DIR}
say() { echo "[guest-bench] $*"; }
size=${SRG_PERFTEST_SIZE:-1048576}
iters=${SRG_PERFTEST_ITERS:-50}

# Average bandwidth in MiB/s (perftest's MB are 2^20 bytes) from perftest's result line,
# the one starting with the message size; empty when it ran no iterations.
perf() {
    local tool=$1 log=$out/$1.log port=$2
    timeout 120 "$tool" -d rxe0 -x 1 -s "$size" -n "$iters" -F -p "$port" >"$log.server" 2>&1 &
    local server=$!
    sleep 2
    timeout 120 "$tool" -d rxe1 -x 1 -s "$size" -n "$iters" -F -p "$port" 10.99.0.1 >"$log" 2>&1
    wait "$server"
    awk -v s="$size" '$1 == s && NF >= 4 { print $4 }' "$log" | tail -n 1
}
write_bw=$(perf ib_write_bw 18600)
read_bw=$(perf ib_read_bw 18601)
say "ib_write_bw ${size} B x ${iters}, rxe1 -> rxe0: ${write_bw:-no result} MiB/s"
say "ib_read_bw  ${size} B x ${iters}, rxe1 -> rxe0: ${read_bw:-no result} MiB/s"
printf '{"message_bytes": %s, "iterations": %s, "ib_write_bw_MiBps": %s, "ib_read_bw_MiBps": %s}\n' \
    "$size" "$iters" "${write_bw:-null}" "${read_bw:-null}" >"$out/perftest.json"

say "seaweed-rdma bench (sidecars on rxe0, clients on rxe1)"
SEAWEED_RDMA_DEVICE=rxe1 SEAWEED_RDMA_SIDECAR_DEVICE=rxe0 timeout 300 \
    seaweed-rdma bench --size-mib "${SRG_BENCH_MIB:-32}" --chunk-mib 4 --rounds 2 \
    --random-reads "${SRG_BENCH_RANDOM:-200}" --out "$out/bench.json" || {
    say "seaweed-rdma bench failed"
    exit 1
}
python - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
bench = json.load(open(f"{out}/bench.json"))
perf = json.load(open(f"{out}/perftest.json"))
seq = bench["sequential_bytes_per_s"]
mib = 1 << 20
print("[guest-bench] sequential MiB/s: " + ", ".join(f"{k} {v / mib:.1f}" for k, v in seq.items()))
if perf["ib_write_bw_MiBps"] and "fast_verbs" in seq:
    share = seq["fast_verbs"] / mib / perf["ib_write_bw_MiBps"]
    print(f"[guest-bench] fast_verbs / ib_write_bw = {share:.2f}")
    if perf["ib_read_bw_MiBps"]:
        print(f"[guest-bench] fast_verbs / ib_read_bw = "
              f"{seq['fast_verbs'] / mib / perf['ib_read_bw_MiBps']:.2f}")
print("[guest-bench] random 4 KiB p50 us: " + ", ".join(
    f"{k} {v['p50_us']:.0f}" for k, v in bench["random_4k"].items()))
EOF
