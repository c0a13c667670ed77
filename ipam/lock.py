"""The host-wide IPAM lock: an exclusive ``flock`` on ``ipam_lock_file``.

It only serialises IPAM calls on one node so that concurrent ADDs do not
fight over the same block (compare-and-swap gives correctness without it).
As upstream, it is best effort: if the file cannot be opened or the lock is
not obtained within ``timeout``, the operation goes ahead unlocked.

Plain ``fcntl.flock`` rather than the ``filelock`` package: same kernel
primitive, and it costs nothing at import (filelock ~45 ms per exec).
The kernel drops the lock when the process dies, SIGKILL included.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_LOCK_FILE = "/var/run/calico/ipam.lock"
DEFAULT_TIMEOUT = 90.0


class _Timeout(Exception):
    pass


def _raise_timeout(signum: int, frame: object) -> None:
    raise _Timeout()


class HostLock:
    def __init__(self, path: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path or DEFAULT_LOCK_FILE
        self.timeout = timeout
        self._fd: int | None = None
        self.held = False
        self.waited = 0.0

    def acquire(self) -> bool:
        start = time.monotonic()
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        except OSError as exc:
            log.error("cannot create the directory of the IPAM lock %s: %s", self.path, exc)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.error("cannot open the IPAM lock %s (%s): proceeding unlocked", self.path, exc)
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except BlockingIOError:
            self.held = self._wait()
        except OSError as exc:
            log.error("cannot lock %s (%s): proceeding unlocked", self.path, exc)
        self.waited = time.monotonic() - start
        self._acquired_at = time.monotonic()
        if not self.held:
            os.close(self._fd)
            self._fd = None
        else:
            log.debug("acquired the host-wide IPAM lock after %.3fs", self.waited)
        return self.held

    def _wait(self) -> bool:
        assert self._fd is not None
        if threading.current_thread() is threading.main_thread():
            # Block in the kernel (fair, no polling); SIGALRM bounds the wait.
            previous = signal.signal(signal.SIGALRM, _raise_timeout)
            signal.setitimer(signal.ITIMER_REAL, self.timeout)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                return True
            except _Timeout:
                log.error("timed out after %.0fs waiting for the IPAM lock %s: proceeding unlocked",
                          self.timeout, self.path)
                return False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while time.monotonic() < deadline:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        log.error("timed out waiting for the IPAM lock %s: proceeding unlocked", self.path)
        return False

    def release(self) -> None:
        if self.held:
            log.info("IPAM lock waited %.3fs, held %.3fs", self.waited, time.monotonic() - self._acquired_at)
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
                self.held = False

    def __enter__(self) -> "HostLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
