"""Type stubs for the Rust extension module ``seaweed_rdma._core``."""

from typing import Any, Generic, Literal, TypeVar, final

__all__ = [
    "ChunkRoute",
    "Engine",
    "NativeReads",
    "Needle",
    "OpFailure",
    "Plan",
    "PolledRead",
    "RangeOp",
    "Ticket",
    "Volume",
    "WholeOp",
    "__version__",
    "_error_samples",
    "decode_filer_masters",
    "decode_manifest",
    "format_fid",
    "needle_crc_matches",
    "parse_fid",
    "sidecar_main",
    "verbs_probe",
    "writable_bytes",
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

_R = TypeVar("_R", covariant=True)
_Transport = Literal["auto", "tcp", "verbs"]

@final
class RangeOp:
    """One ranged read: ``length`` bytes of a needle's data from ``offset``, into the
    caller's buffer at ``buf_offset``."""

    def __new__(cls, sidecar: str, volume: int, key: int, cookie: int, offset: int,
                length: int, buf_offset: int, jwt: str = "") -> RangeOp: ...
    @property
    def sidecar(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def buf_offset(self) -> int: ...

@final
class WholeOp:
    """One whole-needle read."""

    def __new__(cls, sidecar: str, volume: int, key: int, cookie: int,
                jwt: str = "") -> WholeOp: ...
    @property
    def sidecar(self) -> str: ...

@final
class Needle:
    """A needle's whole data as a sidecar sent it; ``verify()`` before use."""

    @property
    def data(self) -> bytes: ...
    @property
    def crc(self) -> int: ...
    @property
    def flags(self) -> int: ...
    def verify(self) -> bool:
        """Whether ``data`` matches the stored CRC32-C (either stored form)."""

@final
class OpFailure:
    """Why one op was not delivered: a stable ``reason`` and a ``message`` for people.
    Compares equal to its reason string."""

    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...

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
class PolledRead:
    """A small batch an event loop drives: wait until ``fileno()`` is readable, then
    ``poll()``; dropping it early gives the batch up (nothing is written afterwards)."""

    def fileno(self) -> int: ...
    def remaining(self) -> float:
        """Seconds until the batch's deadline."""
    def poll(self) -> list[OpFailure | None] | None:
        """The outcomes once every answer is in (or the deadline passed), else None."""

@final
class ChunkRoute:
    """A chunk of a file (the filer's ``offset``, ``size``, ``modified_ts_ns``, ``whole``)
    and the needle behind it on ``sidecar`` (empty: no sidecar serves it, pyfuse3 answers
    its READs)."""

    def __new__(cls, offset: int, size: int, modified_ts_ns: int, whole: bool, sidecar: str,
                volume: int, key: int, cookie: int, jwt: str = "") -> ChunkRoute: ...
    @property
    def offset(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def modified_ts_ns(self) -> int: ...
    @property
    def whole(self) -> bool: ...
    @property
    def sidecar(self) -> str: ...
    @property
    def volume(self) -> int: ...
    @property
    def key(self) -> int: ...
    @property
    def cookie(self) -> int: ...
    @property
    def jwt(self) -> str: ...

@final
class NativeReads:
    """The native FUSE read loop spliced into a mounted pyfuse3 session: READs of
    registered handles are answered on Rust threads from the engine, every other request
    goes on to pyfuse3 unchanged."""

    def __new__(cls, engine: Engine, session_fd: int, threads: int = 4,
                op_bytes: int = 1048576, max_message: int = 1114112,
                jwt_key: str | None = None, read_ahead: int = 16777216,
                read_ahead_total: int = 67108864,
                read_ahead_unit: int = 4194304) -> NativeReads: ...
    def register(self, fh: int, chunks: list[ChunkRoute], attr_size: int) -> None:
        """Answers READs of ``fh`` natively from ``chunks``."""
    def unregister(self, fh: int) -> bool:
        """Stops answering ``fh`` natively; whether it was registered."""
    def offer(self, inode: int, chunks: list[ChunkRoute], attr_size: int,
              keep_cache: bool,
              lookup: tuple[int, bytes, list[int], float, float] | None = None) -> None:
        """Answers read-only OPENs of ``inode`` (and their RELEASEs) natively; with
        ``lookup`` = ``(parent, name, attrs, entry_timeout, attr_timeout)``, LOOKUPs of
        ``name`` in ``parent`` too (``attrs``: size, blocks, atime_ns, mtime_ns,
        ctime_ns, mode, nlink, uid, gid, rdev, blksize)."""
    def take_lookups(self, inode: int) -> int:
        """The kernel references to ``inode`` natively answered LOOKUPs gave it since the
        last call."""
    def withdraw(self, inode: int) -> list[int]:
        """Stops opening ``inode`` natively; the natively opened handles of it, now
        pyfuse3's."""
    def adopt(self, fh: int) -> int | None:
        """Hands natively opened ``fh`` over to pyfuse3: its inode, or None."""
    def ended_fileno(self) -> int:
        """An eventfd readable once the kernel ended the session (unmounted)."""
    @property
    def ended(self) -> bool: ...
    def stats(self) -> dict[str, int]:
        """reads, bytes, unregistered, declined, failed, forwarded, split, replies, errors,
        engine_us, reply_us, most_at_once, flushes (of registered handles, answered
        natively), opens, releases, lookups (answered natively), ioctls (refused
        natively: pyfuse3 has none), registered, offered, named, native_open."""
    def read_ahead_stats(self) -> dict[str, int]:
        """windows, window_bytes, hits, hit_bytes, waits, misses, failed, unused_bytes,
        capped, held (bytes in read-ahead buffers now), most_held, spare (buffers kept
        for reuse while anything is held)."""
    def close(self) -> None:
        """Puts pyfuse3's descriptor back and stops the threads. Idempotent."""

@final
class Engine:
    """The fast-path client: connection pools per sidecar, many reads in flight."""

    def __new__(
        cls,
        timeout_ms: int = 5000,
        connect_timeout_ms: int = 1000,
        max_inflight: int = 128,
        conns_per_sidecar: int = 2,
        transport: _Transport = "auto",
        verbs_slot_size: int = 1048576,
        verbs_slots: int = 64,
        busy_poll_us: int = 50,
        pinned_budget: int = 67108864,
        idle_timeout_ms: int = 60000,
        max_conns: int = 128,
    ) -> Engine:
        """``verbs_slots`` slots per verbs connection, carved from one process-wide pinned
        allocation of ``pinned_budget`` bytes (each connection its own registration and
        rkey). Connections unused for ``idle_timeout_ms`` are closed (0: never); past
        ``max_conns`` open ones the least recently used idle one is closed first."""
    def read_into(self, buffer: Any, ops: list[RangeOp]) -> list[OpFailure | None]:
        """Per op: None when delivered into ``buffer[buf_offset:buf_offset+length]``, else
        an ``OpFailure``."""
    def read_whole(self, ops: list[WholeOp]) -> list[Needle | OpFailure]:
        """Per op a ``Needle`` or an ``OpFailure``."""
    def submit_read_into(self, buffer: Any, ops: list[RangeOp]) -> Ticket[OpFailure | None]:
        """``read_into`` on the engine's threads; ``buffer`` stays exported, and must be left
        alone, until the ticket's results are in (or, if the ticket is dropped, until the
        batch's deadline)."""
    def start_polled(self, buffer: Any, ops: list[RangeOp]) -> PolledRead | None:
        """A small batch (one sidecar, at most 64 KiB) sent from this thread on an idle
        connection, for an event loop to drive; None when it does not qualify."""
    def submit_read_whole(self, ops: list[WholeOp]) -> Ticket[Needle | OpFailure]:
        """``read_whole`` on the engine's threads."""
    def ping(self, addr: str) -> float: ...
    def close(self, timeout_s: float = 2.0) -> None:
        """Closes connections and stops the engine's threads; later ops fail."""
    @property
    def closed(self) -> bool: ...
    def health(self) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]:
        """Counters: batches, reads, bytes (``bytes_by_transport``), failures by reason,
        connects, ``open_conns``, ``reaped``, ``evicted``, ``over_cap``, ``slot_waits`` (verbs
        READs that waited for a free receive slot), and the verbs receive pools'
        ``pinned_bytes`` of ``pinned_budget`` (``pinned_leases`` so far, and
        ``pinned_evicted``: idle verbs connections closed to give a new one their slice)."""

def writable_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new, not yet initialised ``bytes`` of ``size`` bytes and a writable view of it, to
    fill in place before handing the bytes out."""

def _error_samples() -> list[tuple[str, Exception]]:
    """One sample error of every Rust error variant, as raised in Python."""

def sidecar_main(argv: list[str]) -> int:
    """Runs the sidecar with ``argv`` (no program name) until SIGINT/SIGTERM."""

def verbs_probe() -> str:
    """JSON report of what this host can do for the verbs transport (libibverbs, devices,
    ports, GIDs, memlock, soft-RoCE, FUSE), with ``usable`` and the ``reasons`` why not."""
