"""``PlainHttpTransport`` (urllib3 under httpx's API) against a real HTTP/1.1 server (the
standard library's): keep-alive reuse, a connection the server closed, bodies left unread,
chunked uploads, urllib3's errors as httpx's exceptions, and that it never imports
httpcore."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from seaweed_rdma.plainhttp import PlainHttpTransport

BIG = bytes(range(256)) * 4096  # 1 MiB


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[int] = []  # noqa: RUF012 (shared by the server's handler instances)

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Peer", str(self.client_address[1]))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if close:
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path.startswith("/big"):
            self._send(200, BIG)
        elif self.path.startswith("/slow"):
            time.sleep(1.0)
            self._send(200, b"late")
        elif self.path.startswith("/close"):
            self._send(200, b"bye", close=True)
        elif self.path.startswith("/short"):  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.close_connection = True
        elif self.path.startswith("/missing"):
            self._send(404, b"no")
        else:
            self._send(200, self.path.encode())

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, b"got %d" % len(body))

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the tests drop connections on purpose (a reset is what they test)."""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def http() -> Iterator[httpx.Client]:
    with httpx.Client(transport=PlainHttpTransport(),
                      timeout=httpx.Timeout(5.0, read=0.3)) as c:
        yield c


def test_get_and_keep_alive(server: str, http: httpx.Client) -> None:
    first = http.get(server + "/a", params={"q": "x y"})
    assert first.status_code == 200
    assert first.text == "/a?q=x+y"
    second = http.get(server + "/b")
    assert second.headers["X-Peer"] == first.headers["X-Peer"]  # the same connection


def test_status_and_head(server: str, http: httpx.Client) -> None:
    assert http.get(server + "/missing").status_code == 404
    r = http.head(server + "/x")
    assert r.status_code == 200 and r.content == b""
    assert http.get(server + "/after-head").text == "/after-head"


def test_streamed_body_and_early_close(server: str, http: httpx.Client) -> None:
    with http.stream("GET", server + "/big") as r:
        assert b"".join(r.iter_raw()) == BIG
        peer = r.headers["X-Peer"]
    with http.stream("GET", server + "/big") as r:
        assert r.headers["X-Peer"] == peer
        next(r.iter_raw())  # left unread: the connection cannot carry another answer
    r2 = http.get(server + "/c")
    assert r2.text == "/c" and r2.headers["X-Peer"] != peer


def test_server_closed_connection(server: str, http: httpx.Client) -> None:
    r = http.get(server + "/close")
    assert r.text == "bye"
    after = http.get(server + "/d")
    assert after.text == "/d" and after.headers["X-Peer"] != r.headers["X-Peer"]


def test_uploads(server: str, http: httpx.Client) -> None:
    assert http.post(server + "/p", content=BIG).text == f"got {len(BIG)}"

    def pieces() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b""
        yield b"b" * 5

    assert http.post(server + "/p", content=pieces()).text == "got 1005"


def test_errors_are_httpx_errors(server: str, http: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        http.get(server + "/slow")
    assert http.get(server + "/e").text == "/e"  # the timed-out connection was dropped
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(server + "/short")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(httpx.ConnectError):
            http.get(f"http://127.0.0.1:{port}/")


def test_client_never_imports_httpcore(server: str) -> None:
    # A Client's plain-http requests (a filer lookup here) load neither httpcore nor trio.
    host = server.split("//", 1)[1]
    code = ("import sys\nfrom seaweed_rdma import Client\n"
            f"c = Client({host!r}, master={host!r})\n"
            "try:\n    c.entry('/x')\nexcept Exception:\n    pass\n"
            "c.close()\nprint('httpcore' in sys.modules, 'trio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False False"
