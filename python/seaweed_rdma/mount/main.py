"""Mounting: option checks, FUSE set-up, the trio loop, signals and clean unmount."""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path

import pyfuse3
import trio

from ..client import Client
from .flags import MountOptions
from .fs import SeaweedOperations
from .native import NativeLoop

log = logging.getLogger("seaweed_rdma.mount")

READ_AHEAD_KB = 1024


def _stale(path: str) -> str:
    return (f"{path} is a stale FUSE mount (its filesystem process died); clear it with "
            f"`fusermount3 -u {path}` (or `umount -l {path}`) and mount again")


def check_mountpoint(path: str) -> str | None:
    """A sentence saying why ``path`` cannot be mounted on, or None when it can."""
    try:
        os.stat(path)
        if os.path.ismount(path):
            # stat() may be answered from the kernel's attribute cache even when the
            # filesystem behind it is gone; listing needs the filesystem itself.
            os.listdir(path)
            return f"{path} is already a mount point; unmount it first"
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return _stale(path)
        return f"{path}: {e.strerror}"
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    return None


def _bdi_of(target: str) -> str | None:
    """The ``major:minor`` of the mount at ``target`` (a real path) from
    /proc/self/mountinfo. Nothing here may stat the mount point: that would ask our own
    filesystem, whose loop is not running yet, and hang."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        fields = line.split()
        if len(fields) > 4 and fields[4] == target:
            return fields[2]
    return None


def raise_read_ahead(mountpoint: str, kb: int = READ_AHEAD_KB) -> bool:
    """Raises the mount's bdi read_ahead_kb so the kernel asks for large reads.
    ``mountpoint`` must already be a real path (see ``_bdi_of``)."""
    dev = _bdi_of(mountpoint)
    if dev is None:
        return False
    path = Path(f"/sys/class/bdi/{dev}/read_ahead_kb")
    try:
        path.write_text(str(kb))
    except OSError as e:
        log.info("could not raise %s to %d KiB: %s", path, kb, e)
        return False
    log.info("read-ahead of %s raised to %d KiB", mountpoint, kb)
    return True


async def _serve(ops: SeaweedOperations) -> None:
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("%s received: unmounting", signal.Signals(signum).name)
                    pyfuse3.terminate()
                    return

        async def read_ahead() -> None:
            # The kernel sets the bdi's read-ahead when FUSE INIT completes, which happens
            # once the loop below runs; raise it after that, not before.
            await trio.sleep(0.3)
            await trio.to_thread.run_sync(raise_read_ahead, ops.opts.dir)

        async def on_unmount(native: NativeLoop) -> None:
            # pyfuse3 reads our socket, not the device, so it cannot see the unmount itself.
            await trio.lowlevel.wait_readable(native.ended_fileno())
            log.info("the kernel ended the FUSE session (unmounted)")
            pyfuse3.terminate()

        nursery.start_soon(on_signals)
        if ops.native is not None:
            nursery.start_soon(on_unmount, ops.native)
        nursery.start_soon(read_ahead)
        nursery.start_soon(ops.background)  # metadata subscription and uploads
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def _close(ops: SeaweedOperations) -> None:
    if ops.native is not None:
        ops.native.close()  # pyfuse3 unmounts through the real device, not our socket
    pyfuse3.close(unmount=True)


def run_mount(opts: MountOptions) -> int:
    """Mounts, serves until unmounted or signalled, unmounts; returns the exit status."""
    opts.dir = os.path.realpath(opts.dir)  # resolved before mounting; see _bdi_of
    problem = check_mountpoint(opts.dir)
    if problem:
        log.error("%s", problem)
        print(f"seaweed-rdma mount: {problem}", flush=True)
        return 1
    sidecar = opts.rdma_sidecar if opts.rdma_enabled else None
    if opts.rdma_enabled and not sidecar:
        log.warning("-rdma.enabled without -rdma.sidecar: reads go over HTTP")
    transport = opts.rdma_transport if sidecar else "http"
    client = Client(opts.filer, sidecar=sidecar, transport=transport,
                    master=opts.master, jwt_key=opts.jwt_key, meta_ttl=opts.cache_meta_ttl_sec,
                    max_workers=max(4, opts.concurrent_readers),
                    fast_timeout=opts.rdma_timeout_ms / 1000,
                    fast_connect_timeout=opts.rdma_connect_timeout_ms / 1000,
                    fast_max_inflight=max(1, opts.rdma_max_concurrent),
                    fast_busy_poll_us=opts.rdma_busy_poll_us,
                    fallback=opts.rdma_fallback or not sidecar,
                    verify=opts.rdma_verify,
                    # The mount follows the filer's events itself (mount/events.py) and
                    # drops what changed; a directory is listed at its first lookup and
                    # held, as weed mount does (its first lookup in a directory lists it).
                    meta_stream=False, meta_list_dirs=True, meta_list_after=1)
    try:
        root = client.entry(opts.filer_path)
        if not root.is_dir:
            print(f"seaweed-rdma mount: {opts.filer_path} is not a directory on the filer")
            return 1
        ops = SeaweedOperations(client, opts)
        fuse_options = set(pyfuse3.default_options)
        fuse_options |= {f"fsname=seaweedfs:{opts.filer}{opts.filer_path}",
                         "subtype=seaweed-rdma"}
        if opts.read_only:
            fuse_options.add("ro")
        if opts.allow_others:
            fuse_options.add("allow_other")
        if opts.auto_unmount:
            fuse_options.add("auto_unmount")
        if opts.debug:
            fuse_options.add("debug")
        pyfuse3.init(ops, opts.dir, fuse_options)
        ops.attach_fallocate()
        ops.attach_native(NativeLoop.start(client, opts))
        path = "fast path over " + str(sidecar) if sidecar else "HTTP only"
        if ops.native is not None:
            path += f" (native reads on {opts.rdma_native_threads} threads)"
        writes = ("READ-ONLY (writes get EROFS)" if opts.read_only else
                  f"read-write (chunks of {opts.chunk_size_limit_mb} MiB, "
                  f"{opts.concurrent_writers} uploads at once)")
        msg = (f"mounted {opts.filer}{opts.filer_path} on {opts.dir} {writes}; reads: {path}; "
               f"metadata TTL {opts.cache_meta_ttl_sec}s, changes pushed by the filer")
        log.warning("%s", msg) if not log.isEnabledFor(logging.INFO) else log.info("%s", msg)
        print(f"seaweed-rdma mount: {msg}", flush=True)
        try:
            trio.run(_serve, ops)
        except BaseException:
            _close(ops)
            raise
        _close(ops)
        print(f"seaweed-rdma mount: unmounted {opts.dir}", flush=True)
        return 0
    finally:
        client.close()
