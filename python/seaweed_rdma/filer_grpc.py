"""The filer's gRPC API (``filer_pb.SeaweedFiler``): the calls a writing mount makes.

The messages are a subset of SeaweedFS's ``filer.proto``, declared here field by field
(name, number, type, taken from the published schema) and built at run time with
protobuf's descriptor API into a private descriptor pool, so the package needs no
generated code and does not clash with other ``filer_pb`` definitions in the process.
Fields this subset does not declare survive a read-modify-write (protobuf keeps unknown
fields), so an entry looked up and written back keeps what other clients stored in it.

Writes can carry the filer's ``WriteCondition`` (checked by the 4.48 filer under its
per-path lock): ``update(..., expect_fids=...)`` fails with ``Conflict`` unless the stored
chunk list is the one the caller read, and ``create(..., if_absent=True)`` unless there is
no entry yet. A filer that cannot be reached (gRPC UNAVAILABLE: stopped, restarting) is
retried with growing pauses for ``RetryPolicy.deadline_s``, logged once when it goes and
once when it is back, as weed mount rides through a filer restart.

Every call is blocking; the mount runs them off its event loop.
"""

from __future__ import annotations

import errno
import logging
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .discovery import filer_grpc_address
from .errors import NotFound, SeaweedRdmaError
from .filer import Chunk, Entry, go_mode_to_posix

log = logging.getLogger("seaweed_rdma.filer")

_SERVICE = "/filer_pb.SeaweedFiler/"

# WriteCondition.Kind values (filer.proto); the enum travels as a varint, like an int32.
IF_NOT_EXISTS = 1
IF_CHUNKS_EQUAL = 9
PRECONDITION_FAILED = 6  # FilerError, in CreateEntryResponse.error_code

# (name, number, type[, "repeated"]): scalar types by name, messages by their bare name.
_MESSAGES: dict[str, list[tuple[Any, ...]]] = {
    "FileId": [("volume_id", 1, "uint32"), ("file_key", 2, "uint64"), ("cookie", 3, "fixed32")],
    "FileChunk": [
        ("file_id", 1, "string"), ("offset", 2, "int64"), ("size", 3, "uint64"),
        ("modified_ts_ns", 4, "int64"), ("e_tag", 5, "string"), ("fid", 7, "FileId"),
        ("cipher_key", 9, "bytes"), ("is_compressed", 10, "bool"),
        ("is_chunk_manifest", 11, "bool"),
    ],
    "FuseAttributes": [
        ("file_size", 1, "uint64"), ("mtime", 2, "int64"), ("file_mode", 3, "uint32"),
        ("uid", 4, "uint32"), ("gid", 5, "uint32"), ("crtime", 6, "int64"),
        ("mime", 7, "string"), ("ttl_sec", 10, "int32"), ("user_name", 11, "string"),
        ("group_name", 12, "string", "repeated"), ("symlink_target", 13, "string"),
        ("md5", 14, "bytes"), ("rdev", 16, "uint32"), ("inode", 17, "uint64"),
        ("ctime", 18, "int64"), ("mtime_ns", 19, "int32"), ("ctime_ns", 20, "int32"),
        ("crtime_ns", 21, "int32"), ("atime", 22, "int64"), ("atime_ns", 23, "int32"),
    ],
    "Entry": [
        ("name", 1, "string"), ("is_directory", 2, "bool"),
        ("chunks", 3, "FileChunk", "repeated"), ("attributes", 4, "FuseAttributes"),
        ("extended", 5, "map<string,bytes>"), ("hard_link_id", 7, "bytes"),
        ("hard_link_counter", 8, "int32"), ("content", 9, "bytes"),
    ],
    "EventNotification": [
        ("old_entry", 1, "Entry"), ("new_entry", 2, "Entry"), ("delete_chunks", 3, "bool"),
        ("new_parent_path", 4, "string"), ("is_from_other_cluster", 5, "bool"),
        ("signatures", 6, "int32", "repeated"),
    ],
    "LookupDirectoryEntryRequest": [("directory", 1, "string"), ("name", 2, "string")],
    "LookupDirectoryEntryResponse": [("entry", 1, "Entry")],
    "ListEntriesRequest": [
        ("directory", 1, "string"), ("prefix", 2, "string"),
        ("startFromFileName", 3, "string"), ("inclusiveStartFrom", 4, "bool"),
        ("limit", 5, "uint32"),
    ],
    "ListEntriesResponse": [("entry", 1, "Entry")],
    # WriteCondition.Clause, declared flat (the wire does not carry message names).
    "WriteConditionClause": [("kind", 1, "int32"), ("fids", 9, "string", "repeated")],
    "WriteCondition": [("clauses", 1, "WriteConditionClause", "repeated")],
    "CreateEntryRequest": [
        ("directory", 1, "string"), ("entry", 2, "Entry"), ("o_excl", 3, "bool"),
        ("signatures", 5, "int32", "repeated"), ("condition", 7, "WriteCondition"),
    ],
    "CreateEntryResponse": [("error", 1, "string"), ("error_code", 3, "int32")],
    "UpdateEntryRequest": [
        ("directory", 1, "string"), ("entry", 2, "Entry"),
        ("signatures", 4, "int32", "repeated"), ("condition", 6, "WriteCondition"),
    ],
    "UpdateEntryResponse": [],
    "DeleteEntryRequest": [
        ("directory", 1, "string"), ("name", 2, "string"), ("is_delete_data", 4, "bool"),
        ("is_recursive", 5, "bool"), ("ignore_recursive_error", 6, "bool"),
        ("signatures", 8, "int32", "repeated"),
    ],
    "DeleteEntryResponse": [("error", 1, "string")],
    "AtomicRenameEntryRequest": [
        ("old_directory", 1, "string"), ("old_name", 2, "string"),
        ("new_directory", 3, "string"), ("new_name", 4, "string"),
        ("signatures", 5, "int32", "repeated"),
    ],
    "AtomicRenameEntryResponse": [],
    "AssignVolumeRequest": [
        ("count", 1, "int32"), ("collection", 2, "string"), ("replication", 3, "string"),
        ("ttl_sec", 4, "int32"), ("data_center", 5, "string"), ("path", 6, "string"),
        ("rack", 7, "string"), ("disk_type", 8, "string"), ("data_node", 9, "string"),
    ],
    "Location": [
        ("url", 1, "string"), ("public_url", 2, "string"), ("grpc_port", 3, "uint32"),
        ("data_center", 4, "string"),
    ],
    "AssignVolumeResponse": [
        ("file_id", 1, "string"), ("count", 4, "int32"), ("auth", 5, "string"),
        ("collection", 6, "string"), ("replication", 7, "string"), ("error", 8, "string"),
        ("location", 9, "Location"), ("replicas", 10, "Location", "repeated"),
    ],
    "StatisticsRequest": [
        ("replication", 1, "string"), ("collection", 2, "string"), ("ttl", 3, "string"),
        ("disk_type", 4, "string"),
    ],
    "StatisticsResponse": [
        ("total_size", 4, "uint64"), ("used_size", 5, "uint64"), ("file_count", 6, "uint64"),
    ],
    "SubscribeMetadataRequest": [
        ("client_name", 1, "string"), ("path_prefix", 2, "string"), ("since_ns", 3, "int64"),
        ("signature", 4, "int32"), ("path_prefixes", 6, "string", "repeated"),
        ("client_id", 7, "int32"), ("until_ns", 8, "int64"), ("client_epoch", 9, "int32"),
    ],
    "SubscribeMetadataResponse": [
        ("directory", 1, "string"), ("event_notification", 2, "EventNotification"),
        ("ts_ns", 3, "int64"), ("events", 4, "SubscribeMetadataResponse", "repeated"),
    ],
}

_SCALARS = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "fixed32": descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32,
}


def _build() -> dict[str, Any]:
    fd = descriptor_pb2.FileDescriptorProto(name="seaweed_rdma/filer_subset.proto",
                                            package="filer_pb", syntax="proto3")
    label = descriptor_pb2.FieldDescriptorProto
    for msg_name, fields in _MESSAGES.items():
        m = fd.message_type.add(name=msg_name)
        for spec in fields:
            name, number, kind = spec[0], spec[1], spec[2]
            repeated = len(spec) > 3
            f = m.field.add(name=name, number=number, json_name=name)
            if kind.startswith("map<"):
                # A proto3 map is a repeated nested "<Name>Entry" message marked map_entry.
                entry_name = "".join(p.capitalize() for p in name.split("_")) + "Entry"
                me = m.nested_type.add(name=entry_name)
                me.options.map_entry = True
                me.field.add(name="key", number=1, type=_SCALARS["string"],
                             label=label.LABEL_OPTIONAL, json_name="key")
                me.field.add(name="value", number=2, type=_SCALARS["bytes"],
                             label=label.LABEL_OPTIONAL, json_name="value")
                f.type = label.TYPE_MESSAGE
                f.type_name = f".filer_pb.{msg_name}.{entry_name}"
                f.label = label.LABEL_REPEATED
                continue
            f.label = label.LABEL_REPEATED if repeated else label.LABEL_OPTIONAL
            if kind in _SCALARS:
                f.type = _SCALARS[kind]
            else:
                f.type = label.TYPE_MESSAGE
                f.type_name = f".filer_pb.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"filer_pb.{name}"))
            for name in _MESSAGES}


PB: dict[str, Any] = _build()
"""Message classes by name (``PB["Entry"]()``)."""

# Go's os.FileMode type bits, as the filer stores them in FuseAttributes.file_mode.
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_STICKY = 1 << 20


# The kind bits weed mount 4.48 stores for special files (a char device carries the
# char-device bit alone, a block device the device bit).
_GO_KIND = {"dir": GO_DIR, "symlink": GO_SYMLINK, "fifo": 1 << 25, "socket": 1 << 24,
            "char": 1 << 21, "block": 1 << 26}
_POSIX_KIND = {stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
               stat.S_IFSOCK: "socket", stat.S_IFCHR: "char", stat.S_IFBLK: "block"}


def kind_of(st_mode: int) -> str:
    """The kind name ``posix_to_go_mode`` takes for a POSIX ``st_mode`` ("file" for a
    regular file)."""
    return _POSIX_KIND.get(stat.S_IFMT(st_mode), "file")


def posix_to_go_mode(mode: int, kind: str = "file") -> int:
    """Go ``os.FileMode`` bits for POSIX permission bits and a kind (file, dir, symlink,
    fifo, socket, char, block), as weed mount stores them."""
    out = mode & 0o777
    if mode & 0o4000:
        out |= _GO_SETUID
    if mode & 0o2000:
        out |= _GO_SETGID
    if mode & 0o1000:
        out |= _GO_STICKY
    return out | _GO_KIND.get(kind, 0)


def split_path(path: str) -> tuple[str, str]:
    """``(directory, name)`` of an absolute filer path (``/a/b`` -> ``("/a", "b")``)."""
    directory, _, name = path.rstrip("/").rpartition("/")
    return directory or "/", name


def join_path(directory: str, name: str) -> str:
    """The path of ``name`` in ``directory``."""
    return (directory.rstrip("/") + "/" + name) if directory != "/" else "/" + name


def entry_from_pb(pb: Any, path: str, chunks: bool = True) -> Entry:
    """A read-side ``Entry`` for a protobuf entry at ``path`` (what the mount's readers and
    attribute code take). ``chunks=False`` leaves its chunk list empty (attributes only:
    the caller sets the size)."""
    a = pb.attributes
    mtime = a.mtime * 1_000_000_000 + a.mtime_ns
    ctime = a.ctime * 1_000_000_000 + a.ctime_ns if a.ctime else mtime
    mode = a.file_mode | (GO_DIR if pb.is_directory else 0)
    listed = [Chunk(file_id=c.file_id or _fid_text(c.fid), offset=c.offset, size=c.size,
                    modified_ts_ns=c.modified_ts_ns, e_tag=c.e_tag,
                    cipher_key=bytes(c.cipher_key), is_compressed=c.is_compressed,
                    is_chunk_manifest=c.is_chunk_manifest) for c in pb.chunks] if chunks else []
    return Entry(path=path, mode=go_mode_to_posix(mode), size=a.file_size, mtime_ns=mtime,
                 ctime_ns=ctime, crtime_ns=a.crtime * 1_000_000_000 + a.crtime_ns,
                 uid=a.uid, gid=a.gid, mime=a.mime, inode=a.inode, chunks=listed,
                 content=bytes(pb.content) if pb.content else None,
                 symlink_target=a.symlink_target, md5=a.md5.hex() if a.md5 else "",
                 extended={k: bytes(v) for k, v in pb.extended.items()},
                 atime_ns=a.atime * 1_000_000_000 + a.atime_ns if a.atime else 0,
                 rdev=a.rdev, nlink=max(1, pb.hard_link_counter),
                 hard_link_id=bytes(pb.hard_link_id))


def _key_hex(key: int) -> str:
    """A needle key as file ids spell it: hex of its bytes, leading zero bytes dropped."""
    text = f"{key:x}"
    return "0" + text if len(text) % 2 else text


def _fid_text(fid: Any) -> str:
    from ._core import format_fid

    return str(format_fid(fid.volume_id, fid.file_key, fid.cookie))


class FilerRpcError(SeaweedRdmaError):
    """A filer gRPC call that failed; ``errno`` says what the mount answers with."""

    reason = "filer_rpc"

    def __init__(self, message: str, err: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = err


class Conflict(FilerRpcError):
    """A conditional write the filer refused: the entry is no longer the version the
    caller read (or, for ``if_absent``, exists). Re-read and decide again."""

    reason = "conflict"


class FilerUnreachable(FilerRpcError):
    """The filer could not be reached for the whole retry deadline."""

    reason = "filer_unreachable"


def chunk_fids(entry: Any) -> list[str]:
    """The file ids of an entry's chunks, as the filer's ``IF_CHUNKS_EQUAL`` compares
    them (order does not matter to it)."""
    return [c.file_id or _fid_text(c.fid) for c in entry.chunks]


@dataclass(frozen=True)
class RetryPolicy:
    """How long calls wait for an unreachable filer: pauses from ``first_s``, doubling up
    to ``max_s``, until ``deadline_s`` has passed since the first failure."""

    deadline_s: float = 15.0
    first_s: float = 0.25
    max_s: float = 2.0

    def pauses(self) -> Iterator[float]:
        """The pauses between attempts; ends when the next one would pass the deadline."""
        start = time.monotonic()
        pause = self.first_s
        while time.monotonic() - start + pause <= self.deadline_s:
            yield pause
            pause = min(pause * 2, self.max_s)


class Outage:
    """Whether the filer is reachable, as the last calls found it: one log line when it
    goes and one when it is back, however many calls wait meanwhile. Thread-safe."""

    def __init__(self, target: str, deadline_s: float) -> None:
        self.target = target
        self.deadline_s = deadline_s
        self._since: float | None = None
        self._lock = threading.Lock()
        self.outages = 0

    def down(self, reason: str) -> None:
        """A call found the filer unreachable (and will retry)."""
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
            self.outages += 1
        log.warning("filer %s unreachable, retrying for up to %.0fs (%s)", self.target,
                    self.deadline_s, reason[:200])

    def up(self) -> None:
        """A call reached the filer."""
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("filer %s reachable again after %.1fs", self.target,
                        time.monotonic() - since)

    @property
    def is_down(self) -> bool:
        """True while the last call found the filer unreachable."""
        return self._since is not None


# What the filer's error text means, for the calls whose failures carry text only.
_ERROR_TEXT = (
    ("not found", errno.ENOENT), ("no such", errno.ENOENT), ("no entry", errno.ENOENT),
    ("already exists", errno.EEXIST), ("existing", errno.EEXIST),
    ("not empty", errno.ENOTEMPTY), ("non-empty", errno.ENOTEMPTY),
    ("is a directory", errno.EISDIR), ("not a directory", errno.ENOTDIR),
    ("is a file", errno.ENOTDIR), ("name too long", errno.ENAMETOOLONG),
)


def errno_of_text(text: str) -> int:
    """The errno an error text from the filer stands for (EIO when it names none)."""
    low = text.lower()
    for needle, err in _ERROR_TEXT:
        if needle in low:
            return err
    return errno.EIO


def _rpc_error(target: str, what: str, code: Any, text: str) -> FilerRpcError:
    """The error a failed call raises: ``Conflict`` for a refused condition, else a
    ``FilerRpcError`` whose errno follows the status code or the filer's text."""
    message = f"filer {target} {what}: {code.name if code else ''} {text}"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return Conflict(message)
    err = errno.ENOENT if code == grpc.StatusCode.NOT_FOUND else errno_of_text(text)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        err = errno.EIO
    return FilerRpcError(message, err)


@dataclass(frozen=True)
class Assignment:
    """A file id the filer assigned, where to upload it, and its write JWT (if any)."""

    file_id: str
    url: str
    public_url: str
    auth: str


class FilerGrpc:
    """Blocking calls to one filer's gRPC service. Thread-safe; ``close()`` ends the
    channel (and any subscription on it)."""

    def __init__(self, filer: str, timeout: float = 30.0, signature: int = 0,
                 retry: RetryPolicy | None = None) -> None:
        self.filer = filer
        # Sent with every change, so this client can tell its own events from others'.
        self._sigs = [signature] if signature else []
        self.target = filer_grpc_address(filer)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.outage = Outage(self.target, self.retry.deadline_s)
        # Short reconnect back-off: gRPC's default grows to two minutes, which would keep
        # a restarted filer unused long after it is back.
        self._channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", 256 << 20),
                                  ("grpc.initial_reconnect_backoff_ms", 200),
                                  ("grpc.min_reconnect_backoff_ms", 200),
                                  ("grpc.max_reconnect_backoff_ms", 1000)])
        self._calls: dict[str, Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def _call(self, method: str, request: Any, reply: str) -> Any:
        with self._lock:
            fn = self._calls.get(method)
            if fn is None:
                fn = self._channel.unary_unary(
                    _SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=PB[reply].FromString)
                self._calls[method] = fn
        return self.riding(method, lambda: fn(request, timeout=self.timeout))

    def riding(self, what: str, call: Callable[[], Any]) -> Any:
        """Runs ``call`` (a gRPC call), retrying while the filer is unreachable, for up to
        the retry deadline; other failures raise ``FilerRpcError`` at once."""
        pauses = self.retry.pauses()
        while True:
            try:
                out = call()
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                text = (e.details() if hasattr(e, "details") else str(e)) or ""
                if code != grpc.StatusCode.UNAVAILABLE:
                    self.outage.up()
                    raise _rpc_error(self.target, what, code, text) from e
                self.outage.down(text)
                pause = next(pauses, None)
                if pause is None:
                    raise FilerUnreachable(
                        f"filer {self.target} {what}: unreachable for "
                        f"{self.retry.deadline_s:.0f}s, gave up ({text[:200]})") from e
                time.sleep(pause)
                continue
            self.outage.up()
            return out

    # -- entries ---------------------------------------------------------------------------

    def lookup(self, path: str) -> Any | None:
        """The protobuf entry at ``path``, or None when there is none."""
        directory, name = split_path(path)
        try:
            r = self._call("LookupDirectoryEntry",
                           PB["LookupDirectoryEntryRequest"](directory=directory, name=name),
                           "LookupDirectoryEntryResponse")
        except FilerRpcError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return r.entry

    def entry(self, path: str) -> Entry:
        """The read-side ``Entry`` at ``path``; raises ``NotFound`` when there is none."""
        pb = self.lookup(path)
        if pb is None:
            raise NotFound(f"{path}: no such file or directory on filer {self.target}")
        return entry_from_pb(pb, path)

    def list(self, directory: str, limit: int = 1024, start: str = "") -> list[Any]:
        """Up to ``limit`` entries of ``directory`` after ``start``."""
        req = PB["ListEntriesRequest"](directory=directory, limit=limit,
                                       startFromFileName=start)
        stream = self._channel.unary_stream(
            _SERVICE + "ListEntries", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB["ListEntriesResponse"].FromString)
        return list(self.riding(f"ListEntries {directory}",
                                lambda: [r.entry for r in stream(req, timeout=self.timeout)]))

    def create(self, directory: str, entry: Any, exclusive: bool = False,
               if_absent: bool = False) -> None:
        """``CreateEntry`` (creates or replaces; ``exclusive`` fails with EEXIST if it
        exists, ``if_absent`` with ``Conflict``)."""
        req = PB["CreateEntryRequest"](directory=directory, entry=entry, o_excl=exclusive,
                                       signatures=self._sigs)
        if if_absent:
            req.condition.clauses.add(kind=IF_NOT_EXISTS)
        r = self._call("CreateEntry", req, "CreateEntryResponse")
        if r.error_code == PRECONDITION_FAILED:
            raise Conflict(f"filer {self.target} CreateEntry {directory}/{entry.name}: "
                           f"exists already")
        if r.error:
            raise FilerRpcError(f"filer {self.target} CreateEntry {directory}/{entry.name}: "
                                f"{r.error}", errno_of_text(r.error))

    def update(self, directory: str, entry: Any,
               expect_fids: Sequence[str] | None = None) -> None:
        """``UpdateEntry``: replaces the entry's attributes, chunks and extended attributes.
        With ``expect_fids``, only if the stored chunks are exactly those (else
        ``Conflict``): the filer deletes the chunks an update drops, so an update built on
        a stale read would both lose the newer version and name deleted chunks."""
        req = PB["UpdateEntryRequest"](directory=directory, entry=entry, signatures=self._sigs)
        if expect_fids is not None:
            req.condition.clauses.add(kind=IF_CHUNKS_EQUAL, fids=list(expect_fids))
        self._call("UpdateEntry", req, "UpdateEntryResponse")

    def delete(self, path: str, *, delete_data: bool = True, recursive: bool = False) -> None:
        """``DeleteEntry`` of ``path`` (and its chunks, with ``delete_data``)."""
        directory, name = split_path(path)
        r = self._call("DeleteEntry", PB["DeleteEntryRequest"](
            directory=directory, name=name, is_delete_data=delete_data,
            is_recursive=recursive, ignore_recursive_error=False, signatures=self._sigs),
            "DeleteEntryResponse")
        if r.error:
            raise FilerRpcError(f"filer {self.target} DeleteEntry {path}: {r.error}",
                                errno_of_text(r.error))

    def rename(self, old: str, new: str) -> None:
        """``AtomicRenameEntry``: moves ``old`` to ``new``, replacing what is there."""
        od, on = split_path(old)
        nd, nn = split_path(new)
        self._call("AtomicRenameEntry", PB["AtomicRenameEntryRequest"](
            old_directory=od, old_name=on, new_directory=nd, new_name=nn,
            signatures=self._sigs),
            "AtomicRenameEntryResponse")

    def statistics(self, collection: str = "", replication: str = "",
                   disk_type: str = "") -> tuple[int, int, int]:
        """``Statistics``: the cluster's (total bytes, used bytes, file count) for new
        files of this collection, replication and disk type."""
        r = self._call("Statistics", PB["StatisticsRequest"](
            collection=collection, replication=replication, disk_type=disk_type),
            "StatisticsResponse")
        return int(r.total_size), int(r.used_size), int(r.file_count)

    # -- data --------------------------------------------------------------------------------

    def assign(self, *, path: str, collection: str = "", replication: str = "",
               ttl_sec: int = 0, disk_type: str = "", data_center: str = "") -> Assignment:
        """``AssignVolume``: one file id and the volume server to upload it to."""
        return self.assign_many(path=path, count=1, collection=collection,
                                replication=replication, ttl_sec=ttl_sec,
                                disk_type=disk_type, data_center=data_center)[0]

    def assign_many(self, *, path: str, count: int, collection: str = "",
                    replication: str = "", ttl_sec: int = 0, disk_type: str = "",
                    data_center: str = "") -> tuple[Assignment, ...]:
        """``AssignVolume`` with ``count``: up to ``count`` file ids on one volume (the
        master reserves ``count`` consecutive keys; each id here is written out in full,
        key and cookie, not as ``_N``). Ids with a write JWT come one per call (a token
        names one file id)."""
        r = self._call("AssignVolume", PB["AssignVolumeRequest"](
            count=max(1, count), collection=collection, replication=replication,
            ttl_sec=ttl_sec, disk_type=disk_type, data_center=data_center, path=path),
            "AssignVolumeResponse")
        if r.error or not r.file_id:
            raise FilerRpcError(f"filer {self.target} AssignVolume for {path}: "
                                f"{r.error or 'no file id'}")
        first = Assignment(r.file_id, r.location.url, r.location.public_url, r.auth)
        got = max(1, min(count, r.count or 1))
        if got == 1 or r.auth or "_" in r.file_id:
            return (first,)
        vid, _, hexpart = r.file_id.partition(",")
        key, cookie = int(hexpart[:-8], 16), hexpart[-8:]
        return (first, *(Assignment(f"{vid},{_key_hex(key + i)}{cookie}", first.url,
                                    first.public_url, "") for i in range(1, got)))

    # -- metadata events ---------------------------------------------------------------------

    def subscribe(self, client_name: str, path_prefix: str, since_ns: int,
                  client_id: int = 0, signature: int = 0) -> Any:
        """``SubscribeMetadata``: an iterator of events under ``path_prefix`` from
        ``since_ns``; it is also a gRPC call object, so ``cancel()`` ends it. The filer
        sends no event of a change whose request carried ``signature`` (0: none)."""
        stream = self._channel.unary_stream(
            _SERVICE + "SubscribeMetadata", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB["SubscribeMetadataResponse"].FromString)
        # A subscriber without a client id and epoch got no live events from the 4.48 filer
        # in a trial here (only the backlog), so both are always sent.
        return stream(PB["SubscribeMetadataRequest"](
            client_name=client_name, path_prefix=path_prefix, since_ns=since_ns,
            client_id=client_id or random.randint(1, 2**31 - 1), client_epoch=1,
            signature=signature))


def iter_events(reply: Any) -> Iterator[Any]:
    """The events in one ``SubscribeMetadataResponse`` (itself, then any batched ones)."""
    if reply.HasField("event_notification"):
        yield reply
    for inner in reply.events:
        yield from iter_events(inner)
