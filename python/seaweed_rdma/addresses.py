"""Server address forms: ``host:port``, SeaweedFS's ``host:port.grpcPort``, ``:port``, URLs."""

from __future__ import annotations

from urllib.parse import urlsplit


def http_base(address: str) -> str:
    """``http://host:port`` for an address given as ``host:port``, ``host:port.grpc`` or a URL.

    Raises ``ValueError`` naming the address when it has no usable port.
    """
    text = address.strip()
    if "://" in text:
        parts = urlsplit(text)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"address {address!r} needs a host and a port")
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    host, port = split_host_port(text)
    return f"http://{host}:{port}"


def split_host_port(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Splits ``host:port`` (or ``host:port.grpc``, or ``:port``) into host and HTTP port."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} is not host:port")
    port_text = port_text.split(".", 1)[0]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {address!r} has no valid port")
    host = host.strip("[]") or default_host
    return host, int(port_text)
