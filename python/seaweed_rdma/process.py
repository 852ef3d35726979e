"""What a forked child must not touch: objects whose parts belong to the process that made them.

After ``fork()`` the child holds copies of the parent's sockets (HTTP keep-alive
connections to the filer, master and volume servers; the engine's sidecar connections),
locks that some parent thread may have held at that instant, and thread pools whose
threads exist only in the parent. Using any of them mixes the two processes' traffic on
one stream, so each takes the other's answers: wrong bytes with no error. An object
registered here is told, in the child, to abandon its process-bound parts without using
them (no close, no goodbye on a shared socket) and to build new ones on its next call.

``os.register_at_fork`` runs the hook for ``os.fork()`` and every ``multiprocessing``
start method that forks; objects also compare ``os.getpid()`` themselves before using
their parts, and the Rust engine checks the process id on each batch, so nothing that
forks without the hook reaches the parent's connections either.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Protocol


class ForkAware(Protocol):
    """An object with parts bound to the process that built them."""

    def _pause_for_fork(self) -> None:
        """Called before a fork: leave any gRPC call (its threads do not survive)."""

    def _resume_after_fork(self) -> None:
        """Called in the parent after a fork: take up what ``_pause_for_fork`` left."""

    def _abandon_after_fork(self) -> None:
        """Called in a forked child: drop the parent's parts without using them."""


_live: weakref.WeakSet[Any] = weakref.WeakSet()
# The parent's parts, kept alive in the child so that no destructor runs on them there
# (closing an inherited TLS socket, joining a thread that does not exist, unregistering
# memory the parent still uses). They cost only copy-on-write pages.
_abandoned: list[object] = []
_abandoned_lock = threading.Lock()


def register(obj: ForkAware) -> None:
    """Has ``obj._abandon_after_fork()`` called in every forked child while ``obj`` lives."""
    _live.add(obj)


def abandon(parts: object) -> None:
    """Keeps the parent's ``parts`` alive for the life of this (child) process."""
    with _abandoned_lock:
        _abandoned.append(parts)


def _before_fork() -> None:
    for obj in list(_live):
        obj._pause_for_fork()


def _after_fork_in_parent() -> None:
    for obj in list(_live):
        obj._resume_after_fork()


def _after_fork_in_child() -> None:
    global _abandoned_lock
    # A parent thread may have held this lock at the fork: the child's copy would never
    # be released.
    _abandoned_lock = threading.Lock()
    for obj in list(_live):
        obj._abandon_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
