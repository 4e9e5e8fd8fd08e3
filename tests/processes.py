"""Helpers for tests that run services as processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from libs.stack.broker import free_port


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (a service snapshots and closes cleanly), then SIGKILL if it does not exit."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Replica:
    """One worker process of ``service`` (`meterflow <service>`) with its own state directory and
    ports (``MF_<SERVICE>_HTTP_PORT``, ``MF_<SERVICE>_FAUST_PORT``), logging to ``<root>/<name>.log``."""

    def __init__(self, service: str, base: dict[str, str], root: Path, name: str) -> None:
        self.port = free_port()
        prefix = f"MF_{service.upper()}"
        self.env = dict(base, MF_STATE_DIR=str(root / name), **{f"{prefix}_HTTP_PORT": str(self.port),
                        f"{prefix}_FAUST_PORT": str(free_port())})  # fmt: skip
        self.log = root / f"{name}.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.cli", service], env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def readyz(self) -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def wait_ready(self, within: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while (ready := self.readyz()) is None:
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.5)
        return ready

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
