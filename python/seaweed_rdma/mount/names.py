"""Names as the filer stores them: UTF-8 only.

The filer's entries (and ``weed mount``'s, which goes through protobuf strings) hold
UTF-8 text; a name, symlink target or xattr name that is not valid UTF-8 cannot be
stored as given. ``weed mount`` rewrites such bytes to ``_``, so the name a program
created is not the one it lists afterwards; this mount refuses them instead, with
EILSEQ ("illegal byte sequence") and one log line, so the program learns at once.

Every name is also held to ``NAME_MAX`` (255 bytes), as local filesystems do: the kernel
leaves that check to the filesystem, and a FUSE request reaches the mount by name at
``lookup`` first (and at the handlers that make a name), so ``check_length`` there answers
ENAMETOOLONG for every system call that takes a path.
"""

from __future__ import annotations

import errno
import logging

import pyfuse3

log = logging.getLogger("seaweed_rdma.mount")


NAME_MAX = 255


def check_length(raw: bytes) -> None:
    """``FUSEError(ENAMETOOLONG)`` for a name longer than ``NAME_MAX`` bytes."""
    if len(raw) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)


def utf8_name(raw: bytes, what: str) -> str:
    """A name in a directory as text: ENAMETOOLONG past ``NAME_MAX`` bytes, else
    ``utf8_text``."""
    check_length(raw)
    return utf8_text(raw, what)


def utf8_text(raw: bytes, what: str) -> str:
    """``raw`` (a name, a symlink target, an xattr name) as text, or ``FUSEError(EILSEQ)``
    (logged) when it is not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s %r: not valid UTF-8, which the filer cannot store (EILSEQ)",
                    what, raw)
        raise pyfuse3.FUSEError(errno.EILSEQ) from None
