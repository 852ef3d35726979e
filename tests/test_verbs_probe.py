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
