#!/usr/bin/env bash
# The verbs suite on soft-RoCE: boots a Debian guest (its own kernel has rdma_rxe) under qemu
# and runs there, against this checkout's release build, every test that needs an RDMA device:
# the ignored Rust device tests and `pytest -m rdma`, then (unless SEAWEED_RDMA_GUEST_BENCH=0)
# the benches. Exits with the guest's test status.
#
#   sudo bash ci/guest.sh [PYTEST_ARGS...]
#
# Needs: root, x86_64, the Debian mirror (first run only: qemu, debootstrap and the guest's
# packages, ~300 MB), about 3 GB of disk under /var/cache. Prints one line and exits 0
# (a skip) where qemu cannot run here; SEAWEED_RDMA_GUEST=0 skips on purpose.
#
# Environment:
#   SEAWEED_RDMA_GUEST_CACHE    image cache (default /var/cache/seaweed-rdma-guest); the image
#                               is keyed by the hash of ci/guest/build-image.sh
#   SEAWEED_RDMA_GUEST_TIMEOUT  seconds the guest may run (default 1500)
#   SEAWEED_RDMA_GUEST_BENCH    1 (default) to run the benches after the tests, 0 not to
#   SEAWEED_RDMA_GUEST_LOG      where the guest's console goes (default target/guest/console.log)
#
# The guest shares, read-only over virtio-9p with a writable overlay on top: this checkout
# (with its .venv and target/) and the Python install the .venv links to. It writes its
# exit status, the test logs and the bench results to target/guest/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

skip() {
    echo "[guest] skipped: $*"
    exit 0
}
say() { echo "[guest] $*"; }
die() {
    echo "[guest] error: $*" >&2
    exit 1
}

[ "${SEAWEED_RDMA_GUEST:-1}" = "0" ] && skip "SEAWEED_RDMA_GUEST=0"
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || skip "the guest is an x86_64 Linux VM; this host is $(uname -sm)"
[ "$(id -u)" -eq 0 ] || skip "building and booting the guest needs root (debootstrap, 9p shares)"

cache=${SEAWEED_RDMA_GUEST_CACHE:-/var/cache/seaweed-rdma-guest}
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq || return 1
        apt_updated=1
    fi
}

# --- qemu ---------------------------------------------------------------------------------
# `apt-get install qemu-system-x86` removes qemu-utils on machines that have it from
# bookworm-backports, so install with --no-remove; where apt still refuses, unpack the two
# qemu .debs into the cache (their libraries and firmware come from ordinary packages).
qemu=()
find_qemu() {
    if command -v qemu-system-x86_64 >/dev/null; then
        qemu=(qemu-system-x86_64)
        return 0
    fi
    local private="$cache/qemu/usr/bin/qemu-system-x86_64"
    if [ -x "$private" ] && "$private" --version >/dev/null 2>&1; then
        qemu=("$private" -L /usr/share/seabios -L /usr/share/qemu -L /usr/lib/ipxe/qemu)
        return 0
    fi
    return 1
}
install_qemu() {
    command -v apt-get >/dev/null || return 1
    apt_update || return 1
    say "installing qemu-system-x86"
    if apt-get install -y -qq --no-install-recommends --no-remove qemu-system-x86 >/dev/null 2>&1; then
        return 0
    fi
    say "apt refuses qemu-system-x86 here (it would remove qemu-utils); unpacking it privately"
    local deps dl
    deps=$(apt-cache depends qemu-system-x86 qemu-system-common |
        awk '/ Depends: [a-z]/ { print $2 }' | grep -vx 'qemu-system-x86\|qemu-system-common' | sort -u)
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -qq --no-install-recommends --no-remove $deps >/dev/null || return 1
    dl=$(mktemp -d)
    (cd "$dl" && apt-get download qemu-system-x86 qemu-system-common >/dev/null 2>&1) || {
        rm -rf "$dl"
        return 1
    }
    rm -rf "$cache/qemu"
    for deb in "$dl"/*.deb; do dpkg -x "$deb" "$cache/qemu"; done
    rm -rf "$dl"
}
find_qemu || { install_qemu && find_qemu; } ||
    skip "qemu-system-x86_64 is not installed and could not be installed (apt-get install qemu-system-x86)"
"${qemu[@]}" -accel help 2>/dev/null | grep -qx tcg || skip "this qemu has no TCG accelerator"

# --- the guest image ----------------------------------------------------------------------
key=$(sha256sum ci/guest/build-image.sh | cut -c1-16)
image=$cache/$key
if [ ! -f "$image.img" ] || [ ! -f "$image.vmlinuz" ] || [ ! -f "$image.initrd" ]; then
    if ! command -v debootstrap >/dev/null; then
        apt_update || die "apt-get update failed; the guest image cannot be built"
        apt-get install -y -qq --no-install-recommends --no-remove debootstrap >/dev/null ||
            die "cannot install debootstrap"
    fi
    say "building the guest image $image.img (about 2-3 minutes; cached afterwards)"
    t0=$SECONDS
    bash ci/guest/build-image.sh "$image"
    say "guest image built in $((SECONDS - t0)) s"
    # Older images (other hashes of the build script) are not needed any more.
    find "$cache" -maxdepth 1 -name '*.img' ! -name "$key.img" -delete
    find "$cache" -maxdepth 1 \( -name '*.vmlinuz' -o -name '*.initrd' \) ! -name "$key.*" -delete
else
    say "using the cached guest image $image.img"
fi

# --- the host build the guest runs --------------------------------------------------------
# Release builds: under emulation a debug build is several times slower. The test binary
# runs in the guest directly (no cargo there, so nothing is rebuilt), at the same path.
say "building the release wheel into .venv and the Rust test binary"
SEAWEED_RDMA_RELEASE=1 bash ci/install.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The same pyo3 settings maturin built with: pyo3's build scripts rerun when these change,
# and would then rebuild the whole crate for the test binary and again for the next wheel.
pyo3_config=$(ls target/maturin/pyo3-config-*.txt 2>/dev/null | head -n 1)
[ -n "$pyo3_config" ] || die "maturin left no target/maturin/pyo3-config-*.txt to build the tests with"
testbin=$(PYO3_CONFIG_FILE=$root/$pyo3_config PYO3_BUILD_EXTENSION_MODULE=1 \
    cargo test --release --lib --no-run --message-format=json 2>"$root/target/guest-test-build.log" |
    "$root/.venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        print(m["executable"])
' | tail -n 1)
if [ ! -x "$testbin" ]; then
    tail -n 30 "$root/target/guest-test-build.log" >&2
    die "could not build the Rust test binary (cargo test --release --lib --no-run; log above)"
fi
python_bin=$(readlink -f .venv/bin/python)
python_prefix=$(dirname "$(dirname "$python_bin")")
[ -d "$python_prefix/lib" ] || die "cannot tell which Python install .venv uses ($python_bin)"

# --- boot ---------------------------------------------------------------------------------
out=$root/target/guest/out
log=${SEAWEED_RDMA_GUEST_LOG:-$root/target/guest/console.log}
rm -rf "$out"
mkdir -p "$out" "$(dirname "$log")"
shares=("$root" "$python_prefix")
share_list=$(IFS=:; echo "${shares[*]}")
{
    printf 'SRG_ROOT=%q\n' "$root"
    printf 'SRG_TESTBIN=%q\n' "$testbin"
    printf 'SRG_BENCH=%q\n' "${SEAWEED_RDMA_GUEST_BENCH:-1}"
    printf 'SRG_PYTEST_ARGS=(%s)\n' "$(printf '%q ' "$@")"
} >"$out/env.sh"
virtfs=()
for i in "${!shares[@]}"; do
    virtfs+=(-virtfs "local,path=${shares[$i]},mount_tag=srg$i,security_model=none,readonly=on,multidevs=remap")
done
virtfs+=(-virtfs "local,path=$out,mount_tag=srgout,security_model=none,multidevs=remap")
limit=${SEAWEED_RDMA_GUEST_TIMEOUT:-1500}
mem_mb=6144
say "booting the guest under TCG (limit ${limit} s); console: $log"
t0=$SECONDS
set +e
timeout --kill-after=20 "$limit" "${qemu[@]}" \
    -accel tcg,thread=multi -cpu max -smp 2 -m "$mem_mb" -nographic -no-reboot -nic none \
    -kernel "$image.vmlinuz" -initrd "$image.initrd" \
    -append "console=ttyS0 root=/dev/vda rw init=/sbin/srg-init panic=-1 SRG_SHARES=$share_list SRG_RUN=$root/ci/guest/inside.sh" \
    -drive "file=$image.img,format=raw,if=virtio,snapshot=on" \
    "${virtfs[@]}" </dev/null >"$log" 2>&1
qemu_rc=$?
set -e
elapsed=$((SECONDS - t0))
# The serial console ends its lines with \r\n: strip the \r, or the anchored patterns miss.
tr -d '\r' <"$log" |
    grep -E '^\[guest-(in|bench)\]|^test result:|^=+ .*(passed|failed|error).* =+$|^(FAILED|ERROR) |SRG-GUEST-EXIT' |
    tail -n 200 || true
if [ -f "$out/rc" ]; then
    rc=$(tr -dc '0-9' <"$out/rc")
elif [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    die "the guest ran past ${limit} s and was stopped ($elapsed s); see $log"
else
    die "the guest stopped without a result (qemu exit $qemu_rc after $elapsed s); see $log"
fi
say "guest finished in $elapsed s with status $rc (logs: $out)"
exit "${rc:-1}"
