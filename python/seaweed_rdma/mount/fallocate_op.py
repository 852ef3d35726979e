"""FUSE ``fallocate`` for the mount, which pyfuse3 (3.5) does not pass on: libfuse answers
a request with no handler ENOSYS, and the kernel then turns every later fallocate on the
mount into EOPNOTSUPP without asking again (glibc's ``posix_fallocate`` falls back to
writing a byte per block).

``install`` puts a handler into the operations table of the libfuse session that
``pyfuse3.init`` made: pyfuse3 keeps the table it gave libfuse (``fuse_ops``) and the
session pointer in module variables, found through its ELF symbol table; the copy libfuse
keeps in its session is found by comparing it with pyfuse3's table, and only its
``fallocate`` slot, empty in both, is set. If anything does not check out (symbols
stripped, another layout), nothing is changed and the mount answers as before
(EOPNOTSUPP).

The handler runs on the trio thread, inside libfuse's processing of the request (as
pyfuse3's own handlers do); it starts the operation as a task in the session's nursery,
which replies with ``fuse_reply_err`` (0 on success) when it is done.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pyfuse3

log = logging.getLogger("seaweed_rdma.mount")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

# struct fuse_lowlevel_ops (fuse_lowlevel.h, libfuse 3): slot 40 is fallocate, 41
# readdirplus (pyfuse3 sets it); struct fuse_file_info: fh at byte 16.
_SLOT = 8
_FALLOCATE = 40 * _SLOT
_READDIRPLUS = 41 * _SLOT
_TABLE = 44 * _SLOT  # init ... lseek
_FH = 16
_SEARCH = 64  # slots of the session searched for its copy of the table

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                             ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)

# (inode, fh or None, mode, offset, length) -> None, raising pyfuse3.FUSEError
Handler = Callable[[int, "int | None", int, int, int], Awaitable[None]]


def _symbols(path: str, names: set[str]) -> dict[str, int]:
    """The values of ``names`` in the ELF symbol table (``.symtab``) of ``path``."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    found: dict[str, int] = {}
    for _name, kind, _flags, _addr, off, size, link, _info, _align, entsize in sections:
        if kind != 2 or not entsize:  # SHT_SYMTAB
            continue
        stroff = sections[link][4]
        for at in range(off, off + size, entsize):
            st_name, _i, _o, _s, value, _size = struct.unpack_from("<IBBHQQ", data, at)
            end = data.index(b"\0", stroff + st_name)
            name = data[stroff + st_name:end].decode("ascii", "replace")
            if name in names:
                found[name] = value
    return found


class Fallocate:
    """The handler put into the session (kept alive here, as libfuse points at it)."""

    def __init__(self, handler: Handler, nursery: Callable[[], Any]) -> None:
        self._handler = handler
        self._nursery = nursery
        self._fuse = ctypes.CDLL("libfuse3.so.3")
        self._fuse.fuse_reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._fuse.fuse_reply_err.restype = ctypes.c_int
        self.callback = _CALLBACK(self._called)

    def _called(self, req: int, inode: int, mode: int, offset: int, length: int,
                fi: int | None) -> None:
        try:
            fh = ctypes.c_uint64.from_address(fi + _FH).value if fi else None
            self._nursery().start_soon(self._run, req, inode, fh, mode, offset, length)
        except BaseException:  # nothing may leave a C callback
            log.exception("fallocate could not start")
            self._fuse.fuse_reply_err(req, errno.EIO)

    async def _run(self, req: int, inode: int, fh: int | None, mode: int, offset: int,
                   length: int) -> None:
        err = 0
        try:
            await self._handler(inode, fh, mode, offset, length)
        except pyfuse3.FUSEError as e:
            err = e.errno
        except Exception:
            log.exception("fallocate failed")
            err = errno.EIO
        except BaseException:  # cancelled: the mount is ending
            err = errno.EINTR
            raise
        finally:
            # Never ENOSYS: the kernel would stop asking for the life of the mount.
            self._fuse.fuse_reply_err(req, errno.EOPNOTSUPP if err == errno.ENOSYS else err)


def install(handler: Handler, nursery: Callable[[], Any]) -> Fallocate | None:
    """Sets libfuse's ``fallocate`` operation of the session ``pyfuse3.init`` made to
    ``handler`` (run as a task of ``nursery()``). None (logged) when it cannot: the mount
    then answers fallocate with EOPNOTSUPP, as before."""
    try:
        return _install(handler, nursery)
    except (OSError, ValueError, struct.error) as e:
        log.warning("fallocate not supported on this mount: %s", e)
        return None


def _install(handler: Handler, nursery: Callable[[], Any]) -> Fallocate | None:
    path = pyfuse3.__file__
    assert path is not None
    names = {"__pyx_v_7pyfuse3_fuse_ops", "__pyx_v_7pyfuse3_session", "PyInit_pyfuse3"}
    sym = _symbols(path, names)
    if set(sym) != names:
        log.warning("fallocate not supported on this mount: pyfuse3's symbols %s not found",
                    sorted(names - set(sym)))
        return None
    module = ctypes.CDLL(path)
    init_at = ctypes.cast(module.PyInit_pyfuse3, ctypes.c_void_p).value
    assert init_at is not None
    base = init_at - sym["PyInit_pyfuse3"]
    table = ctypes.string_at(base + sym["__pyx_v_7pyfuse3_fuse_ops"], _TABLE)
    session = ctypes.c_void_p.from_address(base + sym["__pyx_v_7pyfuse3_session"]).value
    if not session or table[_FALLOCATE:_FALLOCATE + _SLOT] != bytes(_SLOT) \
            or table[_READDIRPLUS:_READDIRPLUS + _SLOT] == bytes(_SLOT):
        log.warning("fallocate not supported on this mount: pyfuse3's table is not laid "
                    "out as libfuse 3's")
        return None
    held = ctypes.string_at(session, _SEARCH * _SLOT + _TABLE)
    at = held.find(table)
    if at < 0 or at % _SLOT:
        log.warning("fallocate not supported on this mount: libfuse's copy of the "
                    "operations was not found in its session")
        return None
    op = Fallocate(handler, nursery)
    pointer = ctypes.cast(op.callback, ctypes.c_void_p).value
    ctypes.c_void_p.from_address(session + at + _FALLOCATE).value = pointer
    return op
