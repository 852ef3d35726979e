"""The filer's gRPC API (``filer_pb.SeaweedFiler``): the calls a writing mount makes.

The messages are a subset of SeaweedFS's ``filer.proto``, declared here field by field
(name, number, type, taken from the published schema) and built at run time with
protobuf's descriptor API into a private descriptor pool, so the package needs no
generated code and does not clash with other ``filer_pb`` definitions in the process.
Fields this subset does not declare survive a read-modify-write (protobuf keeps unknown
fields), so an entry looked up and written back keeps what other clients stored in it.

Every call is blocking; the mount runs them off its event loop.
"""

from __future__ import annotations

import errno
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .discovery import filer_grpc_address
from .errors import SeaweedRdmaError
from .filer import Chunk, Entry, go_mode_to_posix

_SERVICE = "/filer_pb.SeaweedFiler/"

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
    "CreateEntryRequest": [
        ("directory", 1, "string"), ("entry", 2, "Entry"), ("o_excl", 3, "bool"),
        ("signatures", 5, "int32", "repeated"),
    ],
    "CreateEntryResponse": [("error", 1, "string"), ("error_code", 3, "int32")],
    "UpdateEntryRequest": [
        ("directory", 1, "string"), ("entry", 2, "Entry"),
        ("signatures", 4, "int32", "repeated"),
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


def posix_to_go_mode(mode: int, kind: str = "file") -> int:
    """Go ``os.FileMode`` bits for POSIX permission bits and a kind (file, dir, symlink)."""
    out = mode & 0o777
    if mode & 0o4000:
        out |= _GO_SETUID
    if mode & 0o2000:
        out |= _GO_SETGID
    if mode & 0o1000:
        out |= _GO_STICKY
    if kind == "dir":
        out |= GO_DIR
    elif kind == "symlink":
        out |= GO_SYMLINK
    return out


def split_path(path: str) -> tuple[str, str]:
    """``(directory, name)`` of an absolute filer path (``/a/b`` -> ``("/a", "b")``)."""
    directory, _, name = path.rstrip("/").rpartition("/")
    return directory or "/", name


def join_path(directory: str, name: str) -> str:
    """The path of ``name`` in ``directory``."""
    return (directory.rstrip("/") + "/" + name) if directory != "/" else "/" + name


def entry_from_pb(pb: Any, path: str) -> Entry:
    """A read-side ``Entry`` for a protobuf entry at ``path`` (what the mount's readers and
    attribute code take)."""
    a = pb.attributes
    mtime = a.mtime * 1_000_000_000 + a.mtime_ns
    ctime = a.ctime * 1_000_000_000 + a.ctime_ns if a.ctime else mtime
    mode = a.file_mode | (GO_DIR if pb.is_directory else 0)
    chunks = [Chunk(file_id=c.file_id or _fid_text(c.fid), offset=c.offset, size=c.size,
                    modified_ts_ns=c.modified_ts_ns, e_tag=c.e_tag,
                    cipher_key=bytes(c.cipher_key), is_compressed=c.is_compressed,
                    is_chunk_manifest=c.is_chunk_manifest) for c in pb.chunks]
    return Entry(path=path, mode=go_mode_to_posix(mode), size=a.file_size, mtime_ns=mtime,
                 ctime_ns=ctime, crtime_ns=a.crtime * 1_000_000_000 + a.crtime_ns,
                 uid=a.uid, gid=a.gid, mime=a.mime, inode=a.inode, chunks=chunks,
                 content=bytes(pb.content) if pb.content else None,
                 symlink_target=a.symlink_target, md5=a.md5.hex() if a.md5 else "",
                 extended={k: bytes(v) for k, v in pb.extended.items()})


def _fid_text(fid: Any) -> str:
    from ._core import format_fid

    return str(format_fid(fid.volume_id, fid.file_key, fid.cookie))


class FilerRpcError(SeaweedRdmaError):
    """A filer gRPC call that failed; ``errno`` says what the mount answers with."""

    reason = "filer_rpc"

    def __init__(self, message: str, err: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = err


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

    def __init__(self, filer: str, timeout: float = 30.0, signature: int = 0) -> None:
        self.filer = filer
        # Sent with every change, so this client can tell its own events from others'.
        self._sigs = [signature] if signature else []
        self.target = filer_grpc_address(filer)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", 256 << 20)])
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
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            text = e.details() if hasattr(e, "details") else str(e)
            err = errno.ENOENT if code == grpc.StatusCode.NOT_FOUND else errno_of_text(text or "")
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                err = errno.EIO
            raise FilerRpcError(f"filer {self.target} {method}: {code.name if code else ''} "
                                f"{text}", err) from e

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

    def list(self, directory: str, limit: int = 1024, start: str = "") -> list[Any]:
        """Up to ``limit`` entries of ``directory`` after ``start``."""
        req = PB["ListEntriesRequest"](directory=directory, limit=limit,
                                       startFromFileName=start)
        stream = self._channel.unary_stream(
            _SERVICE + "ListEntries", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB["ListEntriesResponse"].FromString)
        try:
            return [r.entry for r in stream(req, timeout=self.timeout)]
        except grpc.RpcError as e:
            raise FilerRpcError(f"filer {self.target} ListEntries {directory}: {e}") from e

    def create(self, directory: str, entry: Any, exclusive: bool = False) -> None:
        """``CreateEntry`` (creates or replaces; ``exclusive`` fails if it exists)."""
        r = self._call("CreateEntry", PB["CreateEntryRequest"](
            directory=directory, entry=entry, o_excl=exclusive, signatures=self._sigs),
            "CreateEntryResponse")
        if r.error:
            raise FilerRpcError(f"filer {self.target} CreateEntry {directory}/{entry.name}: "
                                f"{r.error}", errno_of_text(r.error))

    def update(self, directory: str, entry: Any) -> None:
        """``UpdateEntry``: replaces the entry's attributes, chunks and extended attributes."""
        self._call("UpdateEntry", PB["UpdateEntryRequest"](directory=directory, entry=entry,
                                                           signatures=self._sigs),
                   "UpdateEntryResponse")

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

    # -- data --------------------------------------------------------------------------------

    def assign(self, *, path: str, collection: str = "", replication: str = "",
               ttl_sec: int = 0, disk_type: str = "", data_center: str = "") -> Assignment:
        """``AssignVolume``: one file id and the volume server to upload it to."""
        r = self._call("AssignVolume", PB["AssignVolumeRequest"](
            count=1, collection=collection, replication=replication, ttl_sec=ttl_sec,
            disk_type=disk_type, data_center=data_center, path=path), "AssignVolumeResponse")
        if r.error or not r.file_id:
            raise FilerRpcError(f"filer {self.target} AssignVolume for {path}: "
                                f"{r.error or 'no file id'}")
        return Assignment(r.file_id, r.location.url, r.location.public_url, r.auth)

    # -- metadata events ---------------------------------------------------------------------

    def subscribe(self, client_name: str, path_prefix: str, since_ns: int,
                  client_id: int = 0) -> Any:
        """``SubscribeMetadata``: an iterator of events under ``path_prefix`` from
        ``since_ns``; it is also a gRPC call object, so ``cancel()`` ends it."""
        stream = self._channel.unary_stream(
            _SERVICE + "SubscribeMetadata", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB["SubscribeMetadataResponse"].FromString)
        # A subscriber without a client id and epoch got no live events from the 4.48 filer
        # in a trial here (only the backlog), so both are always sent.
        return stream(PB["SubscribeMetadataRequest"](
            client_name=client_name, path_prefix=path_prefix, since_ns=since_ns,
            client_id=client_id or random.randint(1, 2**31 - 1), client_epoch=1))


def iter_events(reply: Any) -> Iterator[Any]:
    """The events in one ``SubscribeMetadataResponse`` (itself, then any batched ones)."""
    if reply.HasField("event_notification"):
        yield reply
    for inner in reply.events:
        yield from iter_events(inner)
