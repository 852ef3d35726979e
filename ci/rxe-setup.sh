#!/usr/bin/env bash
# Adds a soft-RoCE (rxe) RDMA device on an Ethernet interface, so the verbs transport and its
# device tests run on a host without RDMA hardware.
#
#   sudo ci/rxe-setup.sh [NETDEV]     NETDEV: default, the first interface other than lo that is up
#
# Idempotent: when NETDEV already has an RDMA link (an rxe device from an earlier run, or a
# RoCE NIC), nothing is added. Then run the device tests with
#   SEAWEED_RDMA_DEVICE=<device> cargo test verbs::device_tests -- --ignored --test-threads 1
# (the device name is printed at the end).
set -euo pipefail

die() {
    echo "rxe-setup: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "this must run as root: it loads a kernel module and adds an RDMA link."
command -v rdma >/dev/null ||
    die "the \`rdma\` tool is missing: install iproute2 (apt-get install iproute2)."

if [ ! -d /sys/module/rdma_rxe ]; then
    command -v modprobe >/dev/null ||
        die "modprobe is missing, so rdma_rxe cannot be loaded: install kmod (apt-get install kmod)."
    if ! modprobe -n rdma_rxe >/dev/null 2>&1; then
        die "this kernel ($(uname -r)) has no rdma_rxe module, so soft-RoCE cannot run here" \
            "(in a container, the host must load it). The verbs tests skip; tcp works as usual."
    fi
    modprobe rdma_rxe || die "modprobe rdma_rxe failed; see dmesg for why."
fi

netdev=${1:-}
if [ -z "$netdev" ]; then
    # `ip -o link show up` prints "2: eth0@if7: <...> ..."; take the name, drop any @peer.
    netdev=$(ip -o link show up | awk -F': ' '$2 != "lo" { split($2, n, "@"); print n[1]; exit }')
fi
[ -n "$netdev" ] || die "no network interface other than lo is up; name one: $0 NETDEV"
[ -e "/sys/class/net/$netdev" ] || die "there is no network interface called $netdev."

# "link rxe0/1 state ACTIVE physical_state LINK_UP netdev eth0" -> rxe0
link_on() {
    rdma link show 2>/dev/null |
        awk -v nd="$1" '{ for (i = 1; i < NF; i++) if ($i == "netdev" && $(i + 1) == nd) {
            split($2, d, "/"); print d[1]; exit } }'
}

device=$(link_on "$netdev")
if [ -n "$device" ]; then
    echo "rxe-setup: $netdev already has RDMA device $device; nothing to add."
else
    name=rxe0
    i=0
    while [ -e "/sys/class/infiniband/$name" ]; do
        i=$((i + 1))
        name="rxe$i"
    done
    rdma link add "$name" type rxe netdev "$netdev" ||
        die "rdma link add $name type rxe netdev $netdev failed (see dmesg)."
    device=$name
    echo "rxe-setup: added $device on $netdev."
fi

rdma link show "$device/1" 2>/dev/null || true
if command -v ibv_devices >/dev/null; then
    ibv_devices
else
    echo "rxe-setup: ibv_devices not found (apt-get install ibverbs-utils to list devices)."
fi
echo "rxe-setup: run the device tests with SEAWEED_RDMA_DEVICE=$device"
