"""``seaweed-rdma doctor``: what this host can do (RDMA devices, ports, GIDs, memlock,
rdma_rxe, FUSE), as text or JSON; non-zero exit with the reason when RDMA cannot be used."""

from __future__ import annotations

import json
from typing import Any

from ._core import verbs_probe
from .extras import EXTRAS, missing


def report() -> dict[str, Any]:
    """The probe as a dict (never raises on a host without RDMA), plus which optional
    Python parts are missing (``extras``: name -> what to install, or None)."""
    r = dict(json.loads(verbs_probe()))
    r["extras"] = {name: missing(name) for name in EXTRAS}
    return r


def _mib(n: int | None) -> str:
    if n is None:
        return "unlimited"
    return f"{n / (1 << 20):.0f} MiB"


def mtu_text(code: object) -> str:
    """An ``enum ibv_mtu`` code (1 = 256 .. 5 = 4096) as bytes; anything else as given."""
    if isinstance(code, int) and not isinstance(code, bool) and 1 <= code <= 5:
        return str(128 << code)
    return "unknown" if code is None else f"unknown ({code})"


def render(r: dict[str, Any]) -> str:
    """Human-readable lines."""
    lib = r["libibverbs"]
    state = f"present {lib.get('version') or ''}" if lib["present"] else "absent"
    where = f" ({lib['path']})" if lib.get("path") else ""
    out = [f"libibverbs: {state}{where}"]
    if not r["devices"]:
        out.append("RDMA devices: none")
    for d in r["devices"]:
        out.append(f"device {d.get('name')}:")
        for p in d.get("ports", []):
            out.append(f"  port {p.get('port')}: {p.get('state')}, {p.get('link_layer')}, "
                       f"active MTU {mtu_text(p.get('active_mtu'))}, "
                       f"max MTU {mtu_text(p.get('max_mtu'))}")
            for g in p.get("gids", []):
                out.append(f"    gid[{g.get('index')}] {g.get('gid')} {g.get('kind', '')}")
    k = r["kernel"]
    out.append(f"rdma_rxe: {'loaded' if k.get('rdma_rxe_loaded') else 'not loaded'}, "
               f"{'loadable' if k.get('rdma_rxe_loadable') else 'not loadable'}")
    m = r["memlock"]
    out.append(f"memlock: soft {_mib(m.get('soft'))}, hard {_mib(m.get('hard'))}, "
               f"CAP_IPC_LOCK {'yes' if m.get('cap_ipc_lock') else 'no'} -> "
               f"{'enough' if m.get('enough') else 'too low (raise ulimit -l)'}")
    f = r["fuse"]
    out.append(f"FUSE: /dev/fuse {'present' if f.get('dev_fuse') else 'missing'}, "
               f"fusermount3 {f.get('fusermount3') or 'missing'}")
    for name, problem in r.get("extras", {}).items():
        out.append(f"extra {name}: {problem or 'installed'}")
    if r["usable"]:
        out.append("RDMA: usable (transport=auto will use verbs where the sidecar can too)")
    else:
        out.append("RDMA: NOT usable here; transport=auto uses tcp. Why:")
        out += [f"  - {reason}" for reason in r["reasons"]]
    return "\n".join(out)


def run_doctor(as_json: bool = False) -> int:
    """Prints the report; exit status 0 when RDMA is usable, 1 otherwise."""
    r = report()
    print(json.dumps(r, indent=2) if as_json else render(r))
    return 0 if r["usable"] else 1
