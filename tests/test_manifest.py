"""Chunk manifests made by a real filer: an entry with more chunks than one manifest batch
is stored by the filer as manifest chunks, which the client must resolve recursively."""

from __future__ import annotations

import importlib
import random
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma._core import decode_manifest, parse_fid
from seaweed_rdma.discovery import filer_grpc_address

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHUNKS = 10_050  # more than the filer's manifest batch of 10,000
PIECE = 64


@pytest.fixture(scope="module")
def filer_pb(tmp_path_factory):  # type: ignore[no-untyped-def]
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("pb")
    proto_dir = Path(__file__).parent / "proto"
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}",
                      str(proto_dir / "filer_subset.proto")])
    assert rc == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("filer_subset_pb2")
    finally:
        sys.path.remove(str(out))


def test_manifest_entry_reads_byte_exact(cluster, filer_pb):  # type: ignore[no-untyped-def]
    rng = random.Random(99)
    sources = []
    for i in range(7):
        data = rng.randbytes(PIECE * 3)
        cluster.upload(f"/manifest-src/s{i}.bin", data)
        sources.append(data)
    with Client(cluster.filer.grpc_address) as c:
        fids = [c.entry(f"/manifest-src/s{i}.bin").chunks[0].file_id for i in range(7)]

        expected = bytearray()
        entry = filer_pb.Entry(name="big.bin")
        now = time.time_ns()
        for i in range(CHUNKS):
            k = i % len(fids)
            vid, key, cookie = parse_fid(fids[k])
            entry.chunks.append(filer_pb.FileChunk(
                file_id=fids[k], offset=i * PIECE, size=PIECE, modified_ts_ns=now + i,
                fid=filer_pb.FileId(volume_id=vid, file_key=key, cookie=cookie)))
            expected += sources[k][:PIECE]
        entry.attributes.file_size = CHUNKS * PIECE
        entry.attributes.file_mode = 0o644
        entry.attributes.mtime = int(time.time())
        entry.attributes.crtime = int(time.time())
        request = filer_pb.CreateEntryRequest(directory="/manifest", entry=entry)
        with grpc.insecure_channel(filer_grpc_address(cluster.filer.grpc_address)) as ch:
            call = ch.unary_unary("/filer_pb.SeaweedFiler/CreateEntry",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=filer_pb.CreateEntryResponse.FromString)
            reply = call(request, timeout=60)
        assert reply.error == ""

        stored = c.entry("/manifest/big.bin")
        manifests = [ch for ch in stored.chunks if ch.is_chunk_manifest]
        assert manifests, "the filer did not turn the chunk list into manifest chunks"
        assert len(stored.chunks) < CHUNKS

        # The decoder reads the filer's own manifest blob.
        blob = c.reader.fetch_whole(manifests[0])
        inner = decode_manifest(blob)
        assert len(inner) >= 1000 and all(d["file_id"] in fids for d in inner)

        # The server-side resolution agrees with ours on the chunk count.
        r = httpx.get(f"{cluster.filer.url}/manifest/big.bin",
                      params={"metadata": "true", "resolveManifest": "true"})
        assert len(r.json()["chunks"]) == CHUNKS

        assert c.read("/manifest/big.bin") == bytes(expected)
        for _ in range(20):
            off = rng.randrange(0, len(expected))
            assert c.read("/manifest/big.bin", off, 5000) == expected[off:off + 5000]
