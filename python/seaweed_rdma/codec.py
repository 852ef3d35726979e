"""Turning a chunk's stored bytes into file bytes: AES-256-GCM decryption, gzip/zstd
decompression, and the integrity checks that apply to whole needles."""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._core import needle_crc_matches
from .errors import ChecksumError, CorruptNeedleError
from .filer import Chunk

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NONCE_SIZE = 12


def decrypt(stored: bytes, key: bytes, what: str) -> bytes:
    """AES-256-GCM with the 12-byte nonce prepended to the ciphertext, as the filer writes it."""
    if len(stored) < NONCE_SIZE + 16:
        raise CorruptNeedleError(f"{what}: encrypted needle of {len(stored)} bytes is too short")
    try:
        return AESGCM(key).decrypt(stored[:NONCE_SIZE], stored[NONCE_SIZE:], None)
    except (InvalidTag, ValueError) as e:
        raise ChecksumError(f"{what}: AES-GCM authentication failed ({e!r})") from e


def decompress(data: bytes, what: str) -> bytes:
    """gzip or zstd, told apart by their magic; anything else is returned as it is (the
    filer marks a chunk compressed only when compression paid off, but old data varies)."""
    try:
        if data.startswith(GZIP_MAGIC):
            return gzip.decompress(data)
        if data.startswith(ZSTD_MAGIC):
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
        raise CorruptNeedleError(f"{what}: cannot decompress ({e!r})") from e
    return data


def check_crc(data: bytes, etag: str, what: str) -> None:
    """Checks a whole needle's data against the volume server's ETag, the needle's stored
    CRC32-C as 8 hex digits (either stored form is accepted)."""
    tag = etag.strip().strip('"')
    if len(tag) != 8:
        return
    try:
        stored = int(tag, 16)
    except ValueError:
        return
    if not needle_crc_matches(data, stored):
        raise ChecksumError(f"{what}: CRC32-C mismatch (stored {tag})")


def check_md5(data: bytes, chunk: Chunk, what: str) -> None:
    """The filer records a chunk's e_tag as the base64 MD5 of its plain bytes."""
    tag = chunk.e_tag
    if len(tag) != 24 or not tag.endswith("=="):
        return
    try:
        expected = base64.b64decode(tag)
    except ValueError:
        return
    if hashlib.md5(data, usedforsecurity=False).digest() != expected:
        raise ChecksumError(f"{what}: content MD5 does not match the chunk's e_tag")


def decode_chunk(stored: bytes, chunk: Chunk, content_encoding: str | None = None) -> bytes:
    """File bytes of a whole chunk from its stored needle bytes."""
    what = f"chunk {chunk.file_id}"
    data = stored
    if chunk.cipher_key:
        data = decrypt(data, chunk.cipher_key, what)
        if chunk.is_compressed:
            data = decompress(data, what)
    elif chunk.is_compressed or content_encoding in ("gzip", "zstd"):
        data = decompress(data, what)
    check_md5(data, chunk, what)
    return data
