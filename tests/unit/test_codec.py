"""Chunk bytes to file bytes: AES-256-GCM, gzip/zstd, CRC32-C and MD5 checks (``codec``)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from seaweed_rdma.codec import check_crc, check_md5, decode_chunk, decompress, decrypt
from seaweed_rdma.errors import ChecksumError, CorruptNeedleError
from seaweed_rdma.filer import Chunk

DATA = b"the quick brown fox jumps over the lazy dog\n" * 500


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def seaweed_crc(data: bytes) -> int:
    """The form SeaweedFS stores (``CRC.Value()``): rotated and offset."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encrypt(data: bytes, key: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, None)


def md5_tag(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def chunk(**kwargs: object) -> Chunk:
    return Chunk(file_id="3,01637037d6", offset=0, size=len(DATA), modified_ts_ns=1,
                 **kwargs)  # type: ignore[arg-type]


def test_crc32c_helper_matches_the_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


class TestDecrypt:
    def test_round_trip(self) -> None:
        key = os.urandom(32)
        assert decrypt(encrypt(DATA, key), key, "t") == DATA

    def test_wrong_key_fails_authentication(self) -> None:
        with pytest.raises(ChecksumError, match="AES-GCM"):
            decrypt(encrypt(DATA, os.urandom(32)), os.urandom(32), "t")

    def test_too_short(self) -> None:
        with pytest.raises(CorruptNeedleError, match="too short"):
            decrypt(b"x" * 20, os.urandom(32), "t")


class TestDecompress:
    def test_gzip_and_zstd_by_magic(self) -> None:
        assert decompress(gzip.compress(DATA), "t") == DATA
        assert decompress(zstandard.ZstdCompressor().compress(DATA), "t") == DATA

    def test_anything_else_is_returned_as_is(self) -> None:
        assert decompress(DATA, "t") == DATA
        assert decompress(b"", "t") == b""

    @pytest.mark.parametrize("bad", [gzip.compress(DATA)[:30], b"\x28\xb5\x2f\xfd" + b"x" * 20])
    def test_corrupt(self, bad: bytes) -> None:
        with pytest.raises(CorruptNeedleError, match="cannot decompress"):
            decompress(bad, "t")


class TestChecks:
    @pytest.mark.parametrize("form", [crc32c, seaweed_crc])
    def test_crc_either_stored_form(self, form: object) -> None:
        tag = f'"{form(DATA):08x}"'  # type: ignore[operator]
        check_crc(DATA, tag, "t")
        with pytest.raises(ChecksumError, match="CRC32-C"):
            check_crc(DATA + b"!", tag, "t")

    @pytest.mark.parametrize("tag", ["", "abc", "not-hex!", md5_tag(DATA)])
    def test_crc_skipped_without_an_8_hex_etag(self, tag: str) -> None:
        check_crc(b"anything", tag, "t")

    def test_md5(self) -> None:
        check_md5(DATA, chunk(e_tag=md5_tag(DATA)), "t")
        with pytest.raises(ChecksumError, match="MD5"):
            check_md5(DATA + b"!", chunk(e_tag=md5_tag(DATA)), "t")
        check_md5(DATA, chunk(e_tag="deadbeef"), "t")  # not an MD5 tag: nothing to check


class TestDecodeChunk:
    def test_plain(self) -> None:
        assert decode_chunk(DATA, chunk()) == DATA

    def test_compressed(self) -> None:
        assert decode_chunk(gzip.compress(DATA), chunk(is_compressed=True)) == DATA

    def test_content_encoding_marks_compression(self) -> None:
        stored = zstandard.ZstdCompressor().compress(DATA)
        assert decode_chunk(stored, chunk(), content_encoding="zstd") == DATA

    def test_encrypted_then_compressed_with_md5(self) -> None:
        key = os.urandom(32)
        c = chunk(cipher_key=key, is_compressed=True, e_tag=md5_tag(DATA))
        assert decode_chunk(encrypt(gzip.compress(DATA), key), c) == DATA

    def test_md5_mismatch_after_decoding(self) -> None:
        with pytest.raises(ChecksumError):
            decode_chunk(DATA, chunk(e_tag=md5_tag(b"other bytes")))
