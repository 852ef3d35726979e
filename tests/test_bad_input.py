"""Bad input gets a clear error (or POSIX behaviour), never a traceback hiding the cause."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seaweed_rdma import Client, InvalidFileId, NotFound, SeaweedRdmaError, Unreachable
from seaweed_rdma._core import parse_fid
from seaweed_rdma.cluster import free_port
from seaweed_rdma.codec import check_crc
from seaweed_rdma.errors import ChecksumError, NeedleNotFound, NoLiveLocation

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def client(cluster):  # type: ignore[no-untyped-def]
    with Client(cluster.filer.grpc_address) as c:
        yield c


@pytest.mark.parametrize("fid", ["", "3", "x,01637037d6", "3,637037d6", "3,zz637037d6",
                                 "3,0123456789abcdef0123456789", "3,01637037d6_x"])
def test_malformed_fid(fid):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidFileId) as e:
        parse_fid(fid)
    assert repr(fid) in str(e.value) or fid in str(e.value)
    assert isinstance(e.value, ValueError)


def test_malformed_fid_through_client(client):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidFileId, match="malformed file id"):
        client.read_fid("not-a-fid")


def test_wrong_cookie_and_unknown_key(cluster, client):  # type: ignore[no-untyped-def]
    cluster.upload("/bad/cookie.bin", b"secret bytes")
    chunk = client.entry("/bad/cookie.bin").chunks[0]
    assert client.read_fid(chunk.file_id) == b"secret bytes"
    vid, key, cookie = parse_fid(chunk.file_id)
    from seaweed_rdma._core import format_fid

    with pytest.raises(NeedleNotFound):
        client.read_fid(format_fid(vid, key, cookie ^ 1))
    with pytest.raises(NeedleNotFound):
        client.read_fid(format_fid(vid, key + 10_000, cookie))


def test_unknown_path(client):  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError) as e:
        client.read("/no/such/file")
    assert isinstance(e.value, NotFound) and "/no/such/file" in str(e.value)
    with pytest.raises(FileNotFoundError):
        client.stat("/no/such/file")
    with pytest.raises(FileNotFoundError):
        client.listdir("/no/such/dir")


def test_directory_read_as_file(cluster, client):  # type: ignore[no-untyped-def]
    cluster.upload("/bad/dir/f.bin", b"x")
    with pytest.raises(IsADirectoryError):
        client.read("/bad/dir")
    with pytest.raises(NotADirectoryError):
        client.listdir("/bad/dir/f.bin")


def test_range_past_eof_is_a_short_read(cluster, client):  # type: ignore[no-untyped-def]
    cluster.upload("/bad/short.bin", b"0123456789")
    assert client.read("/bad/short.bin", 5, 100) == b"56789"
    assert client.read("/bad/short.bin", 10, 5) == b""
    assert client.read("/bad/short.bin", 1000, 5) == b""
    buf = bytearray(b"\xaa" * 8)
    assert client.readinto("/bad/short.bin", buf, 6) == 4
    assert bytes(buf) == b"6789" + b"\xaa" * 4
    with pytest.raises(ValueError):
        client.read("/bad/short.bin", -1, 5)


def test_negative_busy_poll_is_refused_before_connecting():  # type: ignore[no-untyped-def]
    # The filer address is never contacted: the check comes first.
    with pytest.raises(ValueError, match="fast_busy_poll_us must be >= 0, not -1"):
        Client(f"127.0.0.1:{free_port()}", sidecar=":18515", fast_busy_poll_us=-1)


def test_unreachable_filer_names_address():  # type: ignore[no-untyped-def]
    port = free_port()
    with pytest.raises(Unreachable, match=f"127.0.0.1:{port}"):
        Client(f"127.0.0.1:{port}", timeout=2)
    with Client(f"127.0.0.1:{port}", master=f"127.0.0.1:{free_port()}", timeout=2) as c, \
            pytest.raises(Unreachable, match=f"filer 127.0.0.1:{port}"):
        c.read("/x")


def test_unreachable_master_names_address(cluster):  # type: ignore[no-untyped-def]
    cluster.upload("/bad/m.bin", b"abc")
    mport = free_port()
    with Client(cluster.filer.grpc_address, master=f"127.0.0.1:{mport}", timeout=2) as c, \
            pytest.raises(Unreachable, match=f"master 127.0.0.1:{mport}"):
        c.read("/bad/m.bin")


def test_crc_check_accepts_both_forms_and_rejects_bad_data():  # type: ignore[no-untyped-def]
    crc = 0xE3069283  # CRC32-C of b"123456789", the standard check value
    legacy = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    check_crc(b"123456789", f'"{crc:08x}"', "x")
    check_crc(b"123456789", f'"{legacy:08x}"', "x")
    with pytest.raises(ChecksumError, match="CRC32-C mismatch"):
        check_crc(b"123456780", f'"{crc:08x}"', "x")


def test_cli_errors_are_one_line(cluster):  # type: ignore[no-untyped-def]
    out = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "cat", "--filer",
                          cluster.filer.grpc_address, "/no/such"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "no such file" in out.stderr and "Traceback" not in out.stderr


def test_errors_share_a_base():  # type: ignore[no-untyped-def]
    for cls in (InvalidFileId, NotFound, Unreachable, ChecksumError, NoLiveLocation):
        assert issubclass(cls, SeaweedRdmaError)
