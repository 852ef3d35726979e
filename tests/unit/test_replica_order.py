"""Which replica's sidecar is tried first: this host's, then the others in the master's
order; IPv6 hosts keep their brackets."""

from __future__ import annotations

from seaweed_rdma.fastpath import by_locality, sidecar_for, sidecars_for

LOCAL = frozenset({"127.0.0.1", "10.0.0.7", "reader-1"})


def test_local_replica_first_order_kept_otherwise() -> None:
    urls = ["http://10.0.0.5:8080", "http://10.0.0.6:8080", "http://10.0.0.7:8080"]
    assert by_locality(urls, LOCAL) == [urls[2], urls[0], urls[1]]
    assert by_locality(urls[:2], LOCAL) == urls[:2]


def test_sidecars_for_replicas_distinct_local_first() -> None:
    urls = ["http://10.0.0.5:8080", "http://reader-1:8081"]
    assert sidecars_for(":18515", urls, LOCAL) == ["reader-1:18515", "10.0.0.5:18515"]
    # One sidecar for every volume server: one candidate, not one per replica.
    assert sidecars_for("10.0.0.9:18515", urls, LOCAL) == ["10.0.0.9:18515"]
    mapping = {"10.0.0.5:8080": "10.0.0.5:1"}
    assert sidecars_for(mapping, urls, LOCAL) == ["10.0.0.5:1"]


def test_ipv6_addresses_keep_brackets() -> None:
    assert sidecar_for(":18515", "http://[::1]:8080") == "[::1]:18515"
    assert sidecar_for("[fd00::2]:18515", "http://10.0.0.5:8080") == "[fd00::2]:18515"
