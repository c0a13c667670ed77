"""Run and supervise BIRD: check a config, start, reconfigure, restart.

Upstream runs ``bird -R -s /var/run/calico/bird.ctl -d -c <cfg>`` under runit
and reloads with SIGHUP (the same as ``birdc configure``). Here confd keeps
BIRD as a foreground child (``-f``), asks it to reconfigure over the control
socket, and restarts it if it dies (then with ``-R``: graceful-restart
recovery, so peers keep forwarding to this node while it comes back). If a
BIRD is already answering on the socket, confd uses it and leaves its
lifetime alone.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from bird.control import BirdControl, BirdError, bird_command

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    ok: bool
    message: str = ""


@dataclass
class BirdDaemon:
    config_path: str
    socket_path: str
    binary: str = "bird"
    log_path: str | None = None  # BIRD's stderr; None = inherit confd's
    command_prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", "n1"]
    start_timeout: float = 10.0

    def __post_init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- config -----------------------------------------------------------

    def check(self, path: str) -> Outcome:
        """``bird -p -c path``: parse the file without touching a running BIRD."""
        try:
            proc = subprocess.run(
                [*self.command_prefix, self.binary, "-p", "-c", path],
                capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Outcome(False, f"cannot run {self.binary} -p: {exc}")
        message = (proc.stderr or proc.stdout).strip()
        if message.startswith("bird: "):
            message = message[len("bird: "):]
        return Outcome(proc.returncode == 0, message)

    def reconfigure(self) -> Outcome:
        """``birdc configure``: BIRD re-reads its config file. BIRD keeps
        running its old config if it rejects the new one."""
        try:
            reply = bird_command(self.socket_path, "configure", timeout=30)
        except BirdError as exc:
            return Outcome(False, str(exc))
        final = reply.lines[-1][1] if reply.lines else ""
        return Outcome(reply.ok, final)

    # -- process -------------------------------------------------------------

    def owns_process(self) -> bool:
        return self.proc is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def running(self) -> bool:
        if self.proc is not None:
            if self.proc.poll() is None:
                return True
            log.error("BIRD (pid %d) exited with status %s", self.proc.pid, self.proc.returncode)
            self.proc = None
            return False
        return self.answering()

    def answering(self) -> bool:
        try:
            with BirdControl(self.socket_path, timeout=2.0):
                return True
        except BirdError:
            return False

    def start(self) -> Outcome:
        """Start BIRD on ``config_path``; after the first start, in graceful
        restart recovery mode."""
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        recover = self.starts > 0
        args = [*self.command_prefix, self.binary, "-f", "-s", self.socket_path, "-c", self.config_path]
        if recover:
            args.insert(len(self.command_prefix) + 1, "-R")
        out: int | None = None
        if self.log_path:
            os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
            out = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        except OSError as exc:
            return Outcome(False, f"cannot start BIRD: {exc}")
        finally:
            if out is not None:
                os.close(out)
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                return Outcome(False, f"BIRD exited with status {code} at start"
                                      + (f"; see {self.log_path}" if self.log_path else ""))
            if self.answering():
                log.info("started BIRD (pid %d%s)", self.proc.pid, ", recovering" if recover else "")
                return Outcome(True, f"pid {self.proc.pid}")
            time.sleep(0.05)
        return Outcome(False, f"BIRD did not answer on {self.socket_path} within {self.start_timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the BIRD this object started (never one it found running)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
