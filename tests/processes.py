"""Helpers for tests that run services as processes."""

from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (a service snapshots and closes cleanly), then SIGKILL if it does not exit."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
