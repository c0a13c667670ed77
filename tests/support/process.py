"""Stopping the server processes tests start."""
from __future__ import annotations

import signal
import subprocess


def stop_process(proc: "subprocess.Popen[bytes] | None", sig: int = signal.SIGTERM, grace: float = 10) -> None:
    """Send ``sig`` and wait up to ``grace`` seconds, then SIGKILL."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
