"""Optional parts of the package, and the one line that says what to install when one is
missing: the command line checks before it starts anything, never ending in a traceback."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["EXTRAS", "Extra", "missing"]


@dataclass(frozen=True)
class Extra:
    """An optional part: what it is for, the modules it imports, how to install them."""

    purpose: str
    modules: tuple[str, ...]
    install: str


# pyfuse3 has no wheels: pip compiles it against libfuse3.
MOUNT_APT = "libfuse3-dev fuse3 pkg-config gcc"

EXTRAS: dict[str, Extra] = {
    "mount": Extra("the FUSE mount", ("pyfuse3", "trio"),
                   f"pip install 'seaweed-rdma[mount]' (pyfuse3 is compiled against libfuse3: "
                   f"on Debian/Ubuntu first apt-get install {MOUNT_APT})"),
    "fsspec": Extra("the fsspec filesystem", ("fsspec",), "pip install 'seaweed-rdma[fsspec]'"),
    "plot": Extra("bench --plot", ("matplotlib",), "pip install matplotlib"),
}


def missing(name: str) -> str | None:
    """None when every module of extra ``name`` imports; otherwise one line naming what is
    missing and what to install."""
    extra = EXTRAS[name]
    absent = []
    for module in extra.modules:
        try:
            importlib.import_module(module)
        except (ImportError, OSError):  # OSError: a native library it links is missing
            absent.append(module)
    if not absent:
        return None
    return (f"{extra.purpose} needs {' and '.join(absent)}, not installed here; install "
            f"with: {extra.install}")
