"""The verbs probe behind ``doctor``: a JSON report that never raises, on any host."""

from __future__ import annotations

import json

from seaweed_rdma import _core


class TestVerbsProbe:
    def test_report_shape(self) -> None:
        report = json.loads(_core.verbs_probe())
        for key in ("libibverbs", "devices", "kernel", "memlock", "fuse", "usable", "reasons"):
            assert key in report, key
        assert report["usable"] == (not report["reasons"])
        assert all(isinstance(r, str) and r for r in report["reasons"])
        assert isinstance(report["memlock"]["cap_ipc_lock"], bool)
        assert isinstance(report["fuse"]["dev_fuse"], bool)

    def test_reasons_say_what_is_missing(self) -> None:
        report = json.loads(_core.verbs_probe())
        lib = report["libibverbs"]
        if not lib["present"]:
            assert "install rdma-core" in report["reasons"][0]
        elif not report["devices"]:
            assert any("no RDMA devices" in r for r in report["reasons"]), report["reasons"]
        for device in report["devices"]:
            for port in device["ports"]:
                assert port["state"]
                assert port["link_layer"] in ("InfiniBand", "Ethernet", "Unspecified")


class TestDoctor:
    def test_doctor_text_and_exit_status(self) -> None:
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "doctor"],
                           capture_output=True, text=True, timeout=60)
        report = json.loads(_core.verbs_probe())
        assert r.returncode == (0 if report["usable"] else 1)
        assert "libibverbs:" in r.stdout and "FUSE:" in r.stdout and "memlock:" in r.stdout
        if not report["usable"]:
            assert "NOT usable" in r.stdout
            assert report["reasons"][0] in r.stdout

    def test_doctor_json(self) -> None:
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-m", "seaweed_rdma.cli", "doctor", "--json"],
                           capture_output=True, text=True, timeout=60)
        assert json.loads(r.stdout)["reasons"] == json.loads(_core.verbs_probe())["reasons"]

    def test_doctor_prints_mtus_in_bytes(self) -> None:
        """The probe reports `enum ibv_mtu` codes; doctor shows them as bytes."""
        from seaweed_rdma.doctor import mtu_text, render

        assert [mtu_text(c) for c in (1, 2, 3, 4, 5)] == ["256", "512", "1024", "2048", "4096"]
        assert mtu_text(0) == "unknown (0)" and mtu_text(None) == "unknown"
        report = json.loads(_core.verbs_probe())
        port = {"port": 1, "state": "ACTIVE", "link_layer": "Ethernet", "active_mtu": 5,
                "max_mtu": 3, "gids": []}
        report["devices"] = [{"name": "rxe0", "ports": [port]}]
        text = render(report)
        assert "active MTU 4096, max MTU 1024" in text, text
