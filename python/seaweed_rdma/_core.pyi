"""Type stubs for the Rust extension module ``seaweed_rdma._core``."""

from typing import Any, Generic, TypeVar, final

__all__ = [
    "Engine",
    "Plan",
    "Ticket",
    "Volume",
    "__version__",
    "decode_filer_masters",
    "decode_manifest",
    "format_fid",
    "needle_crc_matches",
    "parse_fid",
    "sidecar_main",
    "verbs_probe",
]

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

@final
class Plan:
    """Visible intervals of a chunk list, and the extents of any byte range."""

    def __new__(cls, chunks: list[tuple[int, int, int, bool]], attr_size: int) -> Plan: ...
    @property
    def file_size(self) -> int: ...
    def intervals(self) -> list[tuple[int, int, int, int]]: ...
    def extents(self, offset: int, size: int) -> list[tuple[int, int, int, int, bool]]: ...
    def read_len(self, offset: int, size: int) -> int: ...

@final
class Volume:
    """A read-only view of one volume's ``.idx``/``.dat``."""

    def __new__(cls, dat_path: str) -> Volume: ...
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

_RangeOp = tuple[str, int, int, int, int, int, int, str]
_WholeOp = tuple[str, int, int, int, str]
_R = TypeVar("_R", covariant=True)

@final
class Ticket(Generic[_R]):
    """A submitted batch. ``fileno()`` turns readable once it has finished; ``results()``
    then never blocks."""

    def fileno(self) -> int: ...
    def done(self) -> bool: ...
    def wait(self, timeout_s: float) -> bool:
        """Blocks (without the GIL) up to ``timeout_s``; whether the batch finished."""
    def results(self) -> list[_R]:
        """Per-op results; raises ``RuntimeError`` before the batch has finished."""

@final
class Engine:
    """The fast-path client: connection pools per sidecar, many reads in flight."""

    def __new__(
        cls,
        timeout_ms: int = 5000,
        connect_timeout_ms: int = 1000,
        max_inflight: int = 128,
        conns_per_sidecar: int = 2,
        transport: str = "auto",
        verbs_slot_size: int = 1048576,
        verbs_slots: int = 64,
    ) -> Engine: ...
    def read_into(self, buffer: Any, ops: list[_RangeOp]) -> list[str | None]:
        """Per op ``(sidecar, volume, key, cookie, offset, len, buf_offset, jwt)``: None when
        delivered into ``buffer[buf_offset:buf_offset+len]``, else a short reason."""
    def read_whole(self, ops: list[_WholeOp]) -> list[tuple[bytes, int, int] | str]:
        """Per op ``(data, crc, needle_flags)`` or a short reason."""
    def submit_read_into(self, buffer: Any, ops: list[_RangeOp]) -> Ticket[str | None]:
        """``read_into`` on the engine's threads; ``buffer`` stays exported, and must be left
        alone, until the ticket's results are in."""
    def submit_read_whole(self, ops: list[_WholeOp]) -> Ticket[tuple[bytes, int, int] | str]:
        """``read_whole`` on the engine's threads."""
    def ping(self, addr: str) -> float: ...
    def health(self) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...

def sidecar_main(argv: list[str]) -> int:
    """Runs the sidecar with ``argv`` (no program name) until SIGINT/SIGTERM."""

def verbs_probe() -> str:
    """JSON report of what this host can do for the verbs transport (libibverbs, devices,
    ports, GIDs, memlock, soft-RoCE, FUSE), with ``usable`` and the ``reasons`` why not."""
