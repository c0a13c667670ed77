"""confd's watch loop: datastore → bird.cfg → BIRD.

A :class:`~datastore.syncer.Syncer` keeps :class:`~bird.state.BGPState` in
step with the datastore. Once in sync, and after every relevant change, the
config is rendered; when the text differs from what BIRD runs it is checked
with ``bird -p -c``, written atomically (temp file + rename) and BIRD is
asked to reconfigure. A rejected config is logged as an error (its text kept
next to the real one as ``bird.cfg.rejected``) while BIRD keeps running the
previous one. BIRD is started if it is not running and restarted if it dies.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable

from bird.daemon import BirdDaemon, Outcome
from bird.peerings import SecretLookup
from bird.render import BirdOptions, render
from bird.state import BGPState, watch_options
from datastore.backend import Backend
from datastore.syncer import SyncStatus, Syncer, Update

log = logging.getLogger(__name__)


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bird.cfg.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


@dataclass
class ConfdStats:
    renders: int = 0
    writes: int = 0
    reconfigures: int = 0
    rejected: int = 0
    bird_starts: int = 0
    last_error: str = ""


class Confd:
    """Keeps one node's BIRD configured from the datastore."""

    def __init__(
        self,
        backend: Backend,
        node: str,
        config_path: str,
        daemon: BirdDaemon | None,
        options: BirdOptions = BirdOptions(),
        secrets: SecretLookup | None = None,
        *,
        supervise_interval: float = 1.0,
        debounce: float = 0.02,
        on_applied: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.node = node
        self.config_path = config_path
        self.daemon = daemon
        self.options = options
        self.secrets = secrets
        self.supervise_interval = supervise_interval
        self.debounce = debounce
        self.on_applied = on_applied
        self.state = BGPState()
        self.stats = ConfdStats()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._dirty = False
        self._in_sync = False
        self._syncer: Syncer | None = None
        # What BIRD runs (or will run at its next start): the file's text.
        self.current: str | None = _read(config_path)

    # -- syncer callbacks ----------------------------------------------------

    def _on_updates(self, updates: list[Update]) -> None:
        with self._lock:
            if self.state.apply_all(updates) or not self._in_sync:
                self._dirty = True
        self._wake.set()

    def _on_status(self, status: SyncStatus) -> None:
        if status == SyncStatus.IN_SYNC:
            with self._lock:
                if not self._in_sync:
                    self._in_sync = True
                    self._dirty = True
            self._wake.set()

    # -- lifecycle --------------------------------------------------------------

    def start_syncer(self) -> None:
        # Through Typha's bgp syncer when FELIX_TYPHAADDR / FELIX_TYPHAK8SSERVICENAME is
        # set (calico-node shares these with Felix), else the datastore directly.
        from felix.typha import make_syncer

        self._syncer = make_syncer(os.environ, self.node, self.backend, watch_options(self.node),
                                   self._on_updates, self._on_status, syncer_type="bgp")
        self._syncer.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, oneshot: bool = False) -> int:
        """Loop until :meth:`stop` (or, with ``oneshot``, until the first
        config has been applied). Returns a process exit status."""
        self.start_syncer()
        try:
            while not self._stop.is_set():
                self._wake.wait(self.supervise_interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                if self._dirty and self._in_sync:
                    if self.debounce:
                        time.sleep(self.debounce)  # let a burst of updates land
                    self.sync_once()
                    if oneshot:
                        return 0 if not self.stats.last_error else 1
                self.supervise()
        finally:
            if self._syncer is not None:
                self._syncer.stop()
            if self.daemon is not None and not oneshot:
                self.daemon.stop()  # a one-shot run leaves the BIRD it started running
        return 0

    # -- work ---------------------------------------------------------------------

    def render(self) -> str:
        with self._lock:
            self._dirty = False
            text = render(self.state, self.node, self.options, self.secrets)
        self.stats.renders += 1
        return text

    def sync_once(self) -> Outcome:
        return self.apply(self.render())

    def apply(self, text: str) -> Outcome:
        """Make BIRD run ``text`` (no-op if it already does)."""
        if text == self.current:
            return Outcome(True, "unchanged")
        started = time.perf_counter()
        directory = os.path.dirname(self.config_path) or "."
        os.makedirs(directory, exist_ok=True)
        if self.daemon is not None:
            fd, candidate = tempfile.mkstemp(prefix=".bird.cfg.check.", dir=directory)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            try:
                checked = self.daemon.check(candidate)
            finally:
                os.unlink(candidate)
            if not checked.ok:
                return self._rejected(text, f"bird -p rejected the new config: {checked.message}")
        checked_at = time.perf_counter()
        write_atomic(self.config_path, text)
        written_at = time.perf_counter()
        self.current = text
        self.stats.writes += 1
        outcome = Outcome(True, "written")
        if self.daemon is not None:
            if self.daemon.running():
                outcome = self.daemon.reconfigure()
                self.stats.reconfigures += 1
                if not outcome.ok:
                    self.current = None  # the file is not what BIRD runs: retry on the next change
                    return self._rejected(text, f"BIRD refused to reconfigure: {outcome.message}")
                done = time.perf_counter()
                log.info("BIRD reconfigured: %s (check %.1f ms, write %.1f ms, reconfigure %.1f ms)",
                         outcome.message, (checked_at - started) * 1000, (written_at - checked_at) * 1000,
                         (done - written_at) * 1000)
            else:
                outcome = self._start_bird()
        if outcome.ok:
            self.stats.last_error = ""
            if self.on_applied is not None:
                self.on_applied(text)
        return outcome

    def _rejected(self, text: str, message: str) -> Outcome:
        self.stats.rejected += 1
        self.stats.last_error = message
        rejected_path = self.config_path + ".rejected"
        try:
            write_atomic(rejected_path, text)
        except OSError:
            pass
        log.error("%s (BIRD keeps its previous config; rejected text in %s)", message, rejected_path)
        return Outcome(False, message)

    def _start_bird(self) -> Outcome:
        assert self.daemon is not None
        if not os.path.exists(self.config_path):
            return Outcome(False, "no config yet")
        outcome = self.daemon.start()
        if outcome.ok:
            self.stats.bird_starts += 1
        else:
            self.stats.last_error = outcome.message
            log.error("%s", outcome.message)
        return outcome

    def supervise(self) -> None:
        """Start BIRD if it is not running (it died, or was never started)."""
        if self.daemon is None or self.current is None or self._stop.is_set():
            return
        if not self.daemon.running():
            log.warning("BIRD is not running: starting it")
            self._start_bird()
