#!/bin/bash
# Runs inside the soft-RoCE guest (SRG_RUN of /sbin/srg-init; see ci/guest.sh): sets up two
# rxe devices on the two ends of a veth pair, then runs the device tests from the shared
# checkout and, if asked, the benches. Its exit status is the guest's result.
#
# The network: veth srga (10.99.0.1, rxe0) <-> srgb (10.99.0.2, rxe1), MTU 9000, in one
# namespace with policy routing, so that traffic from one rxe device to the other really
# leaves through its own veth end instead of being routed through lo (where rxe drops it).
# Two namespaces do not work on kernel 6.1: rdma_rxe listens on UDP 4791 only in the root
# namespace. The sidecars the Python tests start use rxe0, their clients rxe1; the Rust
# device tests run engine and sidecar in one process, on rxe1 and rxe0.
set -uo pipefail
# shellcheck source=/dev/null
source /srg/out/env.sh
cd "$SRG_ROOT" || exit 95
out=/srg/out
say() { echo "[guest-in] $*"; }
t_start=$SECONDS

modprobe sch_netem || say "modprobe sch_netem failed: the link-fault tests will fail at tc"
for m in fuse veth rdma_rxe ib_uverbs; do
    modprobe "$m" || {
        say "modprobe $m failed"
        exit 96
    }
done

setup_network() {
    ip link add srga type veth peer name srgb || return 1
    ip addr add 10.99.0.1/24 dev srga
    ip addr add 10.99.0.2/24 dev srgb
    for d in srga srgb; do
        ip link set "$d" mtu 9000
        ip link set "$d" up
    done
    for c in all default srga srgb; do
        sysctl -qw "net.ipv4.conf.$c.accept_local=1" "net.ipv4.conf.$c.rp_filter=0"
    done
    ip rule add pref 10 oif srga lookup 100
    ip rule add pref 11 oif srgb lookup 101
    ip route add 10.99.0.2 dev srga src 10.99.0.1 table 100
    ip route add 10.99.0.1 dev srgb src 10.99.0.2 table 101
    ip rule add pref 100 lookup local
    ip rule del pref 0
    rdma link add rxe0 type rxe netdev srga || return 1
    rdma link add rxe1 type rxe netdev srgb || return 1
    local i
    for i in $(seq 1 100); do
        if [ "$(rdma link show | grep -c 'state ACTIVE')" -ge 2 ] &&
            grep -q ffff /sys/class/infiniband/rxe0/ports/1/gids/1 /sys/class/infiniband/rxe1/ports/1/gids/1 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    say "rxe ports did not become ACTIVE with an IPv4 GID"
    rdma link show
    return 1
}
setup_network || exit 97
rdma link show
# One grep over the whole GID index 1 (reading the 1024-entry table one file at a time is slow here).
grep -H . /sys/class/infiniband/rxe*/ports/1/gids/1
ibv_devinfo -d rxe0 | grep -E 'active_mtu|state'

# Counters of packets each rxe device sent and received: the proof that traffic crossed.
rxe_counts() {
    local d
    for d in rxe0 rxe1; do
        printf '%s sent=%s rcvd=%s ' "$d" \
            "$(cat /sys/class/infiniband/$d/ports/1/hw_counters/sent_pkts)" \
            "$(cat /sys/class/infiniband/$d/ports/1/hw_counters/rcvd_pkts)"
    done
    echo
}
say "rxe counters before the tests: $(rxe_counts)"

export PATH="$SRG_ROOT/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
export RUST_BACKTRACE=1
status=0

# --- Rust device tests (sidecar on rxe0, engine on rxe1: across the veth) ----------------
say "Rust device tests: $SRG_TESTBIN --ignored device_tests (sidecar on rxe0, engine on rxe1)"
t0=$SECONDS
SEAWEED_RDMA_DEVICE=rxe1 SEAWEED_RDMA_SIDECAR_DEVICE=rxe0 timeout 600 "$SRG_TESTBIN" --ignored --test-threads 1 device_tests \
    2>&1 | tee "$out/rust-device-tests.log"
rc=${PIPESTATUS[0]}
say "Rust device tests: exit $rc in $((SECONDS - t0)) s"
if [ "$rc" -ne 0 ]; then
    grep -A30 -E "^---- |panicked" "$out/rust-device-tests.log" | tail -n 100 | sed 's/^/[guest-in] | /'
fi
[ "$rc" -eq 0 ] || status=1

# --- pytest -m rdma (sidecars on rxe0, clients on rxe1: across the veth) ------------------
say "pytest -m rdma (sidecar on rxe0, client on rxe1)"
say "rxe counters: $(rxe_counts)"
t0=$SECONDS
SEAWEED_RDMA_DEVICE=rxe1 SEAWEED_RDMA_SIDECAR_DEVICE=rxe0 \
    timeout 1000 python -m pytest -p no:cacheprovider -m rdma -rfEs -v --tb=short --durations=0 \
    -o timeout=900 \
    --junitxml="$out/pytest-rdma.xml" "${SRG_PYTEST_ARGS[@]}" tests 2>&1 | tee "$out/pytest-rdma.log"
rc=${PIPESTATUS[0]}
say "pytest -m rdma: exit $rc in $((SECONDS - t0)) s"
if [ "$rc" -ne 0 ]; then
    # The host relays only tagged lines: tag the failures so CI's log shows why.
    sed -n '/^=* FAILURES =*$/,$p' "$out/pytest-rdma.log" | tail -n 150 | sed 's/^/[guest-in] | /'
fi
say "rxe counters after pytest: $(rxe_counts)"
[ "$rc" -eq 0 ] || status=1

# The benches only when the tests left time for them within the guest's budget.
if [ "${SRG_BENCH:-0}" = "1" ] && [ $((SECONDS - t_start)) -gt "${SRG_BENCH_AFTER_MAX:-1000}" ]; then
    say "benches skipped: the tests took $((SECONDS - t_start)) s (> ${SRG_BENCH_AFTER_MAX:-1000} s)"
elif [ "${SRG_BENCH:-0}" = "1" ]; then
    say "benches"
    t0=$SECONDS
    timeout 420 bash ci/guest/bench.sh "$out" 2>&1 | tee "$out/bench.log"
    say "benches: exit ${PIPESTATUS[0]} in $((SECONDS - t0)) s (not part of the status)"
fi

say "done in $((SECONDS - t_start)) s, status $status"
exit "$status"
