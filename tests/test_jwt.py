"""Clusters with read JWT: the client mints tokens from the shared key, for HTTP and for the
sidecar; without the key reads are refused with a clear error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time

import httpx
import pytest

from seaweed_rdma import Client
from seaweed_rdma._core import parse_fid
from seaweed_rdma.cluster import LocalCluster
from seaweed_rdma.errors import Unauthorized

from .conftest import FUSE_OK
from .mounts import Mount

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KEY = "test-read-signing-key-0123456789"
SECURITY = f"""
[jwt.signing.read]
key = "{KEY}"
expires_after_seconds = 60
"""


@pytest.fixture(scope="module")
def jwt_cluster():  # type: ignore[no-untyped-def]
    with LocalCluster(volumes=1, security_toml=SECURITY) as c:
        c.add_sidecar(c.volume_servers[0], extra=[f"--jwt-key={KEY}"])
        yield c


def test_http_reads_need_the_key(jwt_cluster):  # type: ignore[no-untyped-def]
    data = random.Random(4).randbytes(2_500_000)
    jwt_cluster.upload("/jwt/f.bin", data, max_mb=1)
    with Client(jwt_cluster.filer.grpc_address, jwt_key=KEY) as c:
        assert c.read("/jwt/f.bin") == data
    with Client(jwt_cluster.filer.grpc_address) as c, \
            pytest.raises(Unauthorized, match="JWT"):
        c.read("/jwt/f.bin", 0, 100)


def test_fast_path_with_the_key(jwt_cluster):  # type: ignore[no-untyped-def]
    data = random.Random(5).randbytes(1_200_000)
    jwt_cluster.upload("/jwt/g.bin", data, max_mb=1)
    with Client(jwt_cluster.filer.grpc_address, sidecar=jwt_cluster.sidecar_map(),
                transport="tcp", jwt_key=KEY) as c:
        assert c.read("/jwt/g.bin") == data
        st = c.stats()
        assert st["http"]["bytes"] == 0 and st["fast"]["bytes"] == len(data)


def test_sidecar_refuses_reads_without_a_token(jwt_cluster):  # type: ignore[no-untyped-def]
    data = random.Random(6).randbytes(10_000)
    jwt_cluster.upload("/jwt/h.bin", data)
    with Client(jwt_cluster.filer.grpc_address, sidecar=jwt_cluster.sidecar_map(),
                transport="tcp") as c:
        with pytest.raises(Unauthorized):
            c.read("/jwt/h.bin")
        assert c.stats()["fallback_reasons"].get("unauthorized", 0) >= 1


def test_sidecar_on_each_volume_host_by_port(jwt_cluster):  # type: ignore[no-untyped-def]
    """``sidecar=":PORT"``: the sidecar at PORT on each volume server's host."""
    data = random.Random(7).randbytes(300_000)
    jwt_cluster.upload("/jwt/port.bin", data)
    port = jwt_cluster.sidecars[0].port
    with Client(jwt_cluster.filer.grpc_address, sidecar=f":{port}", transport="auto",
                jwt_key=KEY) as c:
        assert c.read("/jwt/port.bin") == data
        st = c.stats()
        assert st["fast"]["bytes"] == len(data) and st["http"]["bytes"] == 0
    with Client(jwt_cluster.filer.grpc_address, sidecar=f"127.0.0.1:{port}", jwt_key=KEY) as c:
        assert c.read("/jwt/port.bin") == data
        assert c.stats()["http"]["bytes"] == 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _token(claims: dict[str, object], key: str = KEY, alg: str = "HS256") -> str:
    """A JWT signed by hand, so that any claim (even a malformed one) can be tried."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing = (_b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "."
               + _b64(json.dumps(claims).encode()))
    signature = hmac.new(key.encode(), signing.encode(), digest).digest()
    return f"{signing}.{_b64(signature)}"


def test_sidecar_checks_tokens_as_the_volume_server_does(jwt_cluster):  # type: ignore[no-untyped-def]
    """Every token gets the same verdict (200 or 401) from the sidecar's ``/read`` as from
    the volume server itself: signature, ``exp``, ``nbf`` and the ``fid`` claim."""
    data = random.Random(9).randbytes(5_000)
    jwt_cluster.upload("/jwt/verdicts.bin", data)
    with Client(jwt_cluster.filer.grpc_address, jwt_key=KEY) as c:
        fid = c.entry("/jwt/verdicts.bin").chunks[0].file_id
    vid, key, cookie = parse_fid(fid)
    other = f"{vid},{key + 1:x}{cookie:08x}"
    now = int(time.time())
    cases: dict[str, tuple[str, int]] = {
        "valid": (_token({"fid": fid, "exp": now + 60}), 200),
        "no expiry": (_token({"fid": fid}), 200),
        "nbf in an hour": (_token({"fid": fid, "nbf": now + 3600, "exp": now + 7200}), 401),
        "nbf passed": (_token({"fid": fid, "nbf": now - 5, "exp": now + 60}), 200),
        "expired": (_token({"fid": fid, "exp": now - 5}), 401),
        "wrong key": (_token({"fid": fid, "exp": now + 60}, key="not-the-key"), 401),
        "other fid": (_token({"fid": other, "exp": now + 60}), 401),
        "no fid": (_token({"exp": now + 60}), 401),
        "HS512": (_token({"fid": fid, "exp": now + 60}, alg="HS512"), 200),
        "iat in an hour": (_token({"fid": fid, "iat": now + 3600}), 200),
        "aud and iss": (_token({"fid": fid, "aud": "elsewhere", "iss": "someone"}), 200),
        "exp as numeric text": (_token({"fid": fid, "exp": str(now + 60)}), 200),
        "exp as words": (_token({"fid": fid, "exp": "soon"}), 401),
        "garbage": ("not.a.token", 401),
    }
    vs = jwt_cluster.volume_servers[0]
    sc = jwt_cluster.sidecars[0]
    verdicts = {}
    for name, (token, expected) in cases.items():
        auth = {"Authorization": f"Bearer {token}"}
        by_volume = httpx.get(f"{vs.url}/{fid}", headers=auth, timeout=10).status_code
        by_sidecar = httpx.get(f"{sc.http_url}/read", params={"file_id": fid}, headers=auth,
                               timeout=10).status_code
        verdicts[name] = (by_volume, by_sidecar, expected)
    assert {n: v for n, v in verdicts.items() if v[0] != v[1]} == {}, verdicts
    assert {n: v for n, v in verdicts.items() if v[1] != v[2]} == {}, verdicts


@pytest.mark.fuse
@pytest.mark.skipif(not FUSE_OK, reason="needs /dev/fuse and fusermount3")
def test_mount_native_reads_sign_their_reads(jwt_cluster, tmp_path):  # type: ignore[no-untyped-def]
    data = random.Random(7).randbytes(3 << 20)
    jwt_cluster.upload("/jwt/mounted.bin", data, max_mb=1)
    sc = jwt_cluster.sidecars[0]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount([f"-filer={jwt_cluster.filer.grpc_address}", "-rdma.enabled",
               f"-rdma.sidecar={sc.address}", f"-jwtKey={KEY}"], mnt, tmp_path / "mount.log")
    try:
        before = httpx.get(f"{sc.http_url}/stats", timeout=10).json()
        assert (mnt / "jwt" / "mounted.bin").read_bytes() == data
        after = httpx.get(f"{sc.http_url}/stats", timeout=10).json()
        state = m.state()
    finally:
        assert m.stop() == 0, m.log.read_text()[-3000:]
    loop, client = state["native_reads"], state["client"]
    # Every byte came through the loop, signed: none fell back to Python or HTTP...
    assert loop["bytes"] == len(data) and loop["failed"] == 0, loop
    assert client["fast"]["bytes"] == 0 and client["http"]["bytes"] == 0, client
    # ...and the sidecar, which refuses unsigned reads, sent them.
    assert after["bytes"] - before["bytes"] >= len(data), (before, after)
