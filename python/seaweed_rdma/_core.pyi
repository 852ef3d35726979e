"""Type stubs for the Rust extension module ``seaweed_rdma._core``."""

from typing import Any

__version__: str

def parse_fid(text: str) -> tuple[int, int, int]:
    """``(volume, key, cookie)`` of a file id; raises ``InvalidFileId``."""

def format_fid(volume: int, key: int, cookie: int) -> str:
    """A file id in SeaweedFS's text form."""

def decode_manifest(blob: bytes) -> list[dict[str, Any]]:
    """Chunks of a ``FileChunkManifest`` blob, shaped like the filer's JSON chunks."""

def decode_filer_masters(blob: bytes) -> list[str]:
    """Masters listed in a ``GetFilerConfigurationResponse``."""

def needle_crc_matches(data: bytes, stored: int) -> bool:
    """Whether ``stored`` is the CRC32-C of ``data`` in either stored form."""

class Plan:
    """Visible intervals of a chunk list, and the extents of any byte range."""

    def __init__(self, chunks: list[tuple[int, int, int, bool]], attr_size: int) -> None: ...
    @property
    def file_size(self) -> int: ...
    def intervals(self) -> list[tuple[int, int, int, int]]: ...
    def extents(self, offset: int, size: int) -> list[tuple[int, int, int, int, bool]]: ...
    def read_len(self, offset: int, size: int) -> int: ...

class Volume:
    """A read-only view of one volume's ``.idx``/``.dat``."""

    def __init__(self, dat_path: str) -> None: ...
    def refresh(self) -> bool: ...
    def read(self, key: int, cookie: int, offset: int, size: int) -> bytes: ...
    def read_needle_data(self, key: int, cookie: int) -> bytes: ...
    @property
    def volume_id(self) -> int: ...
    @property
    def collection(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def compaction_revision(self) -> int: ...
    @property
    def needle_count(self) -> int: ...
