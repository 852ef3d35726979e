"""What the verbs tests share: the device report, sidecars that serve verbs only, clients
that may use nothing but verbs, and the check that both ends counted every byte as verbs.

Environment (all optional):
- ``SEAWEED_RDMA_DEVICE``: the client's RDMA device (read by the engine).
- ``SEAWEED_RDMA_SIDECAR_DEVICE``: the sidecars' device (``--rdma-device``, added by
  ``LocalCluster.add_sidecar``). When it differs from the client's, the checks also read
  each device's packet counters, so the bytes must have crossed the link between the two
  (in the guest: the two ends of a veth pair).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seaweed_rdma import Client, _core
from seaweed_rdma.cluster import SIDECAR_DEVICE_ENV, LocalCluster, Sidecar

from .conftest import Shape

REPORT = json.loads(_core.verbs_probe())
NEEDS_DEVICE = pytest.mark.skipif(
    not REPORT["usable"], reason="needs an RDMA device: " + "; ".join(REPORT["reasons"]))

CLIENT_DEVICE = os.environ.get("SEAWEED_RDMA_DEVICE", "")
SIDECAR_DEVICE = os.environ.get(SIDECAR_DEVICE_ENV, "")
# Generous deadlines: a verbs handshake and a batch take far longer on soft-RoCE under
# emulation than on hardware, and with fallback off a missed deadline fails the read.
CONNECT_TIMEOUT = 60.0
READ_TIMEOUT = 60.0
START_TIMEOUT = 300.0  # a verbs sidecar registers its staging pool before it serves
TWO_DEVICES = bool(CLIENT_DEVICE and SIDECAR_DEVICE and CLIENT_DEVICE != SIDECAR_DEVICE)


@pytest.fixture(scope="module")
def verbs_sidecars(cluster: LocalCluster, shapes: dict[str, Shape]) -> Iterator[list[Sidecar]]:
    made = [cluster.add_sidecar(vs, extra=["--transport=verbs"], start_timeout=START_TIMEOUT)
            for vs in cluster.volume_servers]
    yield made
    for sc in made:
        sc.kill()
        cluster.sidecars.remove(sc)


def mapping(sidecars: list[Sidecar]) -> dict[str, str]:
    """``{volume server URL: sidecar address}`` for ``Client(sidecar=...)``."""
    return {sc.volume_server.url: sc.address for sc in sidecars if sc.volume_server is not None}


def verbs_client(filer: str, sidecars: list[Sidecar], **kw: Any) -> Client:
    """A client that may only use verbs: no tcp, and no HTTP fallback either, so an extent
    verbs cannot deliver fails the read instead of hiding."""
    return Client(filer, sidecar=mapping(sidecars), transport="verbs", fallback=False,
                  fast_connect_timeout=CONNECT_TIMEOUT, fast_timeout=READ_TIMEOUT, **kw)


def sidecar_bytes(sidecars: list[Sidecar]) -> dict[str, int]:
    """Payload bytes the sidecars delivered, per transport, summed over them."""
    total = {"tcp": 0, "verbs": 0}
    for sc in sidecars:
        per = sc.stats()["transports"]
        assert isinstance(per, dict)
        for t in total:
            total[t] += int(per[t]["bytes"])
    return total


def rxe_packets() -> dict[str, tuple[int, int]]:
    """``{device: (sent, received)}`` packet counters of both devices (empty unless two)."""
    out: dict[str, tuple[int, int]] = {}
    if not TWO_DEVICES:
        return out
    for dev in (CLIENT_DEVICE, SIDECAR_DEVICE):
        base = Path("/sys/class/infiniband") / dev / "ports/1/hw_counters"
        if not base.is_dir():
            return {}
        out[dev] = (int((base / "sent_pkts").read_text()), int((base / "rcvd_pkts").read_text()))
    return out


@contextlib.contextmanager
def verbs_only(client: Client, sidecars: list[Sidecar], note: str) -> Iterator[None]:
    """Checks, over the block, that every byte went over verbs on both ends: the client's
    engine and the sidecars count the same verbs bytes, nothing over tcp, nothing over
    HTTP, no fallbacks; with two devices, each device's packet counters moved."""
    before = sidecar_bytes(sidecars)
    engine_before = dict(client.stats().get("engine", {}).get("bytes_by_transport", {}))
    packets_before = rxe_packets()
    yield
    st = client.stats()
    after = sidecar_bytes(sidecars)
    served = {t: after[t] - before[t] for t in after}
    by_transport = st["engine"]["bytes_by_transport"]
    engine = {t: by_transport.get(t, 0) - engine_before.get(t, 0) for t in ("tcp", "verbs")}
    assert st["http"]["bytes"] == 0, (note, st)
    assert st["fallbacks"] == 0, (note, st["fallback_reasons"])
    assert engine["tcp"] == 0, (note, by_transport)
    assert served["tcp"] == 0, (note, "sidecars counted tcp bytes", served)
    assert engine["verbs"] > 0, (note, st)
    assert served["verbs"] == engine["verbs"], (note, "client and sidecars disagree",
                                                served, engine)
    assert st["transport"] == "verbs", (note, st["sidecars"])
    if packets_before:
        packets = rxe_packets()
        sent_by_sidecar = packets[SIDECAR_DEVICE][0] - packets_before[SIDECAR_DEVICE][0]
        got_by_client = packets[CLIENT_DEVICE][1] - packets_before[CLIENT_DEVICE][1]
        assert sent_by_sidecar > 0 and got_by_client > 0, (note, packets_before, packets)


def stored_on_volumes(s: Shape) -> bool:
    """Whether the shape has bytes on volume servers (not empty, not inline in the entry,
    not only holes)."""
    return bool(s.data) and s.note != "inline"
