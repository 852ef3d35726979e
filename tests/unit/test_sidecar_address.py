"""Which sidecar serves a volume server, per the ``sidecar=`` spec (``sidecar_for``)."""

from __future__ import annotations

import pytest

from seaweed_rdma.fastpath import sidecar_for


@pytest.mark.parametrize("volume_url,expected", [
    ("http://10.0.0.5:8080", "10.0.0.5:18515"),
    ("http://vs-1.example:8081", "vs-1.example:18515"),
    ("10.0.0.7:8080", "127.0.0.1:18515"),  # not a URL: no host to take, so loopback
])
def test_port_only_means_on_each_volume_servers_host(volume_url: str, expected: str) -> None:
    assert sidecar_for(":18515", volume_url) == expected


@pytest.mark.parametrize("volume_url", ["http://10.0.0.5:8080", "http://10.0.0.6:8080"])
def test_host_and_port_means_one_sidecar_for_all(volume_url: str) -> None:
    assert sidecar_for("sc.example:18515", volume_url) == "sc.example:18515"


def test_host_port_with_grpc_suffix_uses_the_first_port() -> None:
    assert sidecar_for("sc:18515.28515", "http://10.0.0.5:8080") == "sc:18515"


@pytest.mark.parametrize("key", ["http://10.0.0.5:8080", "10.0.0.5:8080"])
def test_mapping_by_url_or_host_port(key: str) -> None:
    spec = {key: "10.1.0.5:18515", "http://other:1": "x:1"}
    assert sidecar_for(spec, "http://10.0.0.5:8080") == "10.1.0.5:18515"


def test_mapping_without_the_volume_server_gives_none() -> None:
    assert sidecar_for({"http://other:8080": "x:1"}, "http://10.0.0.5:8080") is None


@pytest.mark.parametrize("spec", [":notaport", "host", ":0", ":70000"])
def test_bad_spec_is_a_value_error(spec: str) -> None:
    with pytest.raises(ValueError, match="port"):
        sidecar_for(spec, "http://10.0.0.5:8080")
