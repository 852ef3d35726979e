"""A pyfuse3 mount that does no work: one file, ``/bench/file.bin`` of ``--size-mib``, whose
read handler answers every request with a slice of one buffer made at start-up (no fetch,
no copy in Python). Same FUSE options, trio loop and read-ahead as ``seaweed-rdma mount``,
so fio against it measures pyfuse3's own request and reply path on this machine: the most
any mount built on pyfuse3 can deliver here. ``benches/bench_mount.py --null`` runs it
beside the two real mounts.

    .venv/bin/python benches/fuse_null.py -dir=MOUNTPOINT [--size-mib 256]
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
from typing import Any

import pyfuse3
import trio

from seaweed_rdma.mount.main import raise_read_ahead

ROOT, DIR, FILE = pyfuse3.ROOT_INODE, pyfuse3.ROOT_INODE + 1, pyfuse3.ROOT_INODE + 2
NAMES = {(ROOT, b"bench"): DIR, (DIR, b"file.bin"): FILE}


class NullOperations(pyfuse3.Operations):
    """``/bench/file.bin``, read-only, served from memory."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        # Not zeros: a page of zeros could be shared or skipped somewhere along the way.
        self.data = memoryview(os.urandom(1 << 20) * (size >> 20) + os.urandom(size % (1 << 20)))
        self.reads = 0
        self.bytes = 0

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_mode = (stat.S_IFREG | 0o444) if inode == FILE else (stat.S_IFDIR | 0o555)
        attr.st_size = self.size if inode == FILE else 0
        attr.st_nlink = 1
        attr.st_blksize = 1 << 20
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.entry_timeout = attr.attr_timeout = 3600
        return attr

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if inode not in (ROOT, DIR, FILE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        inode = NAMES.get((parent_inode, name))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if inode != FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True, direct_io=False)

    async def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
        self.reads += 1
        piece = self.data[off:off + size]
        self.bytes += len(piece)
        return piece

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = [(b"bench", DIR)] if fh == ROOT else [(b"file.bin", FILE)]
        for i, (name, inode) in enumerate(entries[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._attr(inode), i):
                return


async def serve(mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        async def read_ahead() -> None:
            await trio.sleep(0.3)  # after FUSE INIT, as seaweed-rdma mount does
            await trio.to_thread.run_sync(raise_read_ahead, mountpoint)

        nursery.start_soon(on_signals)
        nursery.start_soon(read_ahead)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-dir", dest="mountpoint", required=True, help="where to mount")
    ap.add_argument("--size-mib", type=int, default=256)
    a = ap.parse_args()
    mountpoint = os.path.realpath(a.mountpoint)
    ops = NullOperations(a.size_mib << 20)
    options = set(pyfuse3.default_options) | {"fsname=fuse-null", "ro", "auto_unmount"}
    pyfuse3.init(ops, mountpoint, options)
    try:
        trio.run(serve, mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    print(f"fuse-null: {ops.reads} reads, {ops.bytes} bytes", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
