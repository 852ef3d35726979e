#!/usr/bin/env bash
# Builds the Debian guest that runs the verbs tests on soft-RoCE: a bookworm rootfs with the
# Debian kernel (which ships rdma_rxe), rdma-core, perftest and fuse3, as an ext4 image plus
# the kernel and initrd to boot it with qemu's -kernel/-initrd.
#
#   ci/guest/build-image.sh OUT_PREFIX
#
# writes OUT_PREFIX.img, OUT_PREFIX.vmlinuz and OUT_PREFIX.initrd (each via a temporary name,
# so an interrupted build never leaves a half-made image behind). ci/guest.sh calls this
# when no image keyed by this file's hash is cached. Needs root, debootstrap and mkfs.ext4.
#
# The guest's PID 1 is /sbin/srg-init (written below). It mounts the host folders that
# ci/guest.sh shares over virtio-9p, read-only, at their host paths with an overlay on top,
# then runs the script named by SRG_RUN and powers off. Everything the tests run comes from
# the host's checkout, so the image changes only when this file does.
set -euo pipefail

out=${1:?usage: build-image.sh OUT_PREFIX}
mirror=${SRG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=linux-image-amd64,rdma-core,ibverbs-utils,perftest,iproute2,kmod,python3,fuse3,procps,iputils-ping,psmisc

work=$(mktemp -d /var/tmp/srg-build.XXXXXX)
cleanup() {
    for m in proc sys dev; do umount -l "$work/root/$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
root=$work/root

echo "[guest-image] debootstrap bookworm ($mirror) into $root"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 40 "$work/debootstrap.log" >&2
    echo "[guest-image] debootstrap failed (log above)" >&2
    exit 1
}

# The initrd must find the root disk on virtio without probing hardware it was built on.
cat >"$root/etc/initramfs-tools/conf.d/srg" <<'EOF'
MODULES=most
EOF
printf 'virtio_blk\nvirtio_pci\next4\n' >>"$root/etc/initramfs-tools/modules"
kver=$(basename "$(ls -d "$root"/lib/modules/*)")
echo "[guest-image] update-initramfs for $kver"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
chroot "$root" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 || {
    tail -n 40 "$work/initramfs.log" >&2
    echo "[guest-image] update-initramfs failed (log above)" >&2
    exit 1
}
for m in proc sys dev; do umount -l "$root/$m"; done

echo "srg-guest" >"$root/etc/hostname"
printf '127.0.0.1 localhost srg-guest\n' >"$root/etc/hosts"
# Allow unlimited locked memory for verbs registration (the init runs as root anyway).
printf '* - memlock unlimited\n' >"$root/etc/security/limits.d/srg.conf" 2>/dev/null || true
# apt caches are not needed in the guest.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

cat >"$root/sbin/srg-init" <<'EOF'
#!/bin/bash
# PID 1 of the seaweed-rdma test guest (written by ci/guest/build-image.sh).
# Kernel command line words it reads (arrive in the environment):
#   SRG_SHARES  colon-separated host paths; share N is 9p tag srgN, mounted at that path
#   SRG_RUN     script to run once they are mounted; its exit status is the guest's result
# The host folder with tag srgout is mounted read-write at /srg/out; the result goes to
# /srg/out/rc and, as a marker line, to the console.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -o remount,rw / 2>/dev/null || true
hostname srg-guest
ip link set lo up
echo "srg-init: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"

finish() {
    echo "SRG-GUEST-EXIT=$1"
    [ -d /srg/out ] && { echo "$1" >/srg/out/rc; sync; }
    sync
    echo o >/proc/sysrq-trigger
    sleep 30
}

for m in 9p 9pnet_virtio overlay; do
    modprobe "$m" || { echo "srg-init: modprobe $m failed"; finish 90; }
done
mkdir -p /srg/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 srgout /srg/out ||
    { echo "srg-init: cannot mount the result folder (tag srgout)"; finish 91; }
i=0
IFS=: read -r -a shares <<<"${SRG_SHARES:-}"
for path in "${shares[@]}"; do
    lower=/srg/lower$i upper=/srg/rw/upper$i work=/srg/rw/work$i
    mkdir -p "$lower" "$upper" "$work" "$path"
    if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro "srg$i" "$lower"; then
        echo "srg-init: cannot mount share srg$i ($path)"
        finish 92
    fi
    if ! mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$path"; then
        echo "srg-init: cannot put an overlay on $path"
        finish 93
    fi
    i=$((i + 1))
done
if [ -z "${SRG_RUN:-}" ] || [ ! -f "$SRG_RUN" ]; then
    echo "srg-init: nothing to run (SRG_RUN=${SRG_RUN:-unset})"
    finish 94
fi
ulimit -l unlimited
bash "$SRG_RUN"
finish $?
EOF
chmod 755 "$root/sbin/srg-init"

cp "$root/boot/vmlinuz-$kver" "$out.vmlinuz.tmp"
cp "$root/boot/initrd.img-$kver" "$out.initrd.tmp"
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$((used_mb + 6144)) # room for the clusters the tests start (writes stay in -snapshot)
echo "[guest-image] mkfs.ext4 ${size_mb} MiB from ${used_mb} MiB of files"
rm -f "$out.img.tmp"
mkfs.ext4 -q -F -L srgroot -d "$root" "$out.img.tmp" "${size_mb}M"
mv "$out.vmlinuz.tmp" "$out.vmlinuz"
mv "$out.initrd.tmp" "$out.initrd"
mv "$out.img.tmp" "$out.img"
echo "[guest-image] done: $out.img"
