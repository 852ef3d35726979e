"""A ``seaweed-rdma mount`` run as a subprocess for tests, always unmounted at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class Mount:
    """A ``seaweed-rdma mount`` subprocess, always unmounted at the end."""

    def __init__(self, args: list[str], mnt: Path, log: Path, timeout: float = 30.0) -> None:
        self.mnt = mnt
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "seaweed_rdma.cli", "mount", *args, f"-dir={mnt}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mount did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        return self.proc.returncode

    def state(self) -> dict[str, Any]:
        """The mount's own state (inodes, cache, client stats) from its root's xattr."""
        return dict(json.loads(os.getxattr(self.mnt, "user.seaweed_rdma.stats")))
