"""When the mount runs native reads, and how it finds pyfuse3's descriptor."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from seaweed_rdma.mount.flags import parse_mount_args
from seaweed_rdma.mount.native import session_fd, why_not


def _client(fast: object | None) -> SimpleNamespace:
    return SimpleNamespace(reader=SimpleNamespace(fast=fast))


def test_reasons_to_stay_in_python() -> None:
    base = ["-filer=h:1", "-dir=/m", "-rdma.enabled", "-rdma.sidecar=:1"]
    fast = object()
    assert why_not(_client(fast), parse_mount_args(base)) is None  # type: ignore[arg-type]
    cases = {
        "-rdma.nativeReads=false": "nativeReads=false",
        "-rdma.verify": "whole",
    }
    for flag, words in cases.items():
        why = why_not(_client(fast), parse_mount_args([*base, flag]))  # type: ignore[arg-type]
        assert why is not None and words in why, (flag, why)
    # Read JWTs are minted by the loop itself.
    assert why_not(_client(fast), parse_mount_args([*base, "-jwtKey=k"])) is None  # type: ignore[arg-type]
    why = why_not(_client(None), parse_mount_args(base))  # type: ignore[arg-type]
    assert why is not None and "no fast path" in why


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_the_session_descriptor_is_the_only_fuse_device() -> None:
    assert session_fd() is None
    first = os.open("/dev/fuse", os.O_RDWR)
    try:
        assert session_fd() == first
        second = os.open("/dev/fuse", os.O_RDWR)
        try:
            assert session_fd() is None, "two devices: which one is the session's is unknown"
        finally:
            os.close(second)
    finally:
        os.close(first)


def test_bad_arguments_are_refused_and_change_nothing() -> None:
    from seaweed_rdma._core import Engine, NativeReads

    engine = Engine(transport="tcp")
    try:
        fd = os.open("/dev/null", os.O_RDWR)
        try:
            with pytest.raises(ValueError, match="max_message"):
                NativeReads(engine, fd, max_message=1000)
            with pytest.raises(OSError):
                NativeReads(engine, fd)  # not a FUSE device: it cannot be cloned
            assert os.readlink(f"/proc/self/fd/{fd}") == "/dev/null", "left as it was"
        finally:
            os.close(fd)
    finally:
        engine.close()
