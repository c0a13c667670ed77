"""List-then-watch loop that keeps a consumer in step with the datastore.

The syncer survives datastore restarts (it re-opens the watch from the last
revision it delivered) and compaction (it re-lists and delivers the
difference: puts for new or changed keys, deletes for keys that vanished).
Felix, confd and Typha all consume datastore state through it.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from datastore.backend import Backend, EventType
from datastore.errors import DatastoreError, Unavailable
from datastore.keys import Key, ListOptions, ResourceKey

log = logging.getLogger(__name__)


class SyncStatus(str, Enum):
    WAIT_FOR_DATASTORE = "wait-for-ready"
    RESYNC = "resync"
    IN_SYNC = "in-sync"


@dataclass(frozen=True)
class Update:
    key: Key
    value: dict[str, Any] | None  # None = deleted
    revision: str


OnUpdates = Callable[[list[Update]], None]
OnStatus = Callable[[SyncStatus], None]


class Syncer:
    def __init__(
        self,
        backend: Backend,
        options: list[ListOptions],
        on_updates: OnUpdates,
        on_status: OnStatus = lambda status: None,
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self._backend = backend
        self._options = options
        self._on_updates = on_updates
        self._on_status = on_status
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self.cache: dict[Key, tuple[str, dict[str, Any]]] = {}
        self.revision = "0"
        self.resyncs = 0
        self._resumed = False
        self._listed: list[tuple[ListOptions, int]] = []  # lists later than the earliest

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Syncer":
        self._thread = threading.Thread(target=self.run, name="syncer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None:
            self._thread.join(10)

    # -- loop ----------------------------------------------------------------

    def run(self) -> None:
        backoff = self._min_backoff
        need_list = True
        self._on_status(SyncStatus.WAIT_FOR_DATASTORE)
        while not self._stop.is_set():
            try:
                if need_list:
                    self._on_status(SyncStatus.RESYNC)
                    self._relist()
                    self._on_status(SyncStatus.IN_SYNC)
                    need_list = False
                need_list = self._watch_once()
                backoff = self._min_backoff
            except (Unavailable, DatastoreError) as exc:
                if self._stop.is_set():
                    break
                log.warning("datastore unavailable, retrying in %.1fs: %s", backoff, exc)
                self._on_status(SyncStatus.WAIT_FOR_DATASTORE)
                self._stop.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, self._max_backoff)
                if not need_list:
                    # Back in sync only once the watch is re-established.
                    self._resumed = True

    def _relist(self) -> None:
        fresh: dict[Key, tuple[str, dict[str, Any]]] = {}
        listed: list[tuple[ListOptions, int]] = []
        for opts in self._options:
            result = self._backend.list(opts)
            listed.append((opts, int(result.revision)))
            for kv in result.items:
                fresh[kv.key] = (kv.revision, kv.value)
        # The lists run one after another: a change to a kind listed early that lands
        # before a later list is in no list. So the watch starts after the earliest
        # list, and skips the events a later list already covered (see _covered).
        revision = str(max((r for _, r in listed), default=0))
        earliest = min((r for _, r in listed), default=0)
        self._listed = [(opts, r) for opts, r in listed if r > earliest]
        updates = [
            Update(key, value, rev)
            for key, (rev, value) in fresh.items()
            if self.cache.get(key, ("", None))[0] != rev
        ]
        updates += [Update(key, None, revision) for key in self.cache if key not in fresh]
        self.cache = fresh
        self.revision = str(earliest)
        self.resyncs += 1
        if updates or self.resyncs == 1:
            self._on_updates(updates)

    def _watch_once(self) -> bool:
        """Watch until the stream breaks (raises) or history is lost (returns
        True: re-list needed)."""
        watch = self._backend.watch(self._options, self.revision)
        self._watch = watch
        if self._resumed:
            self._resumed = False
            self._on_status(SyncStatus.IN_SYNC)
        try:
            for event in watch:
                if self._stop.is_set():
                    return False
                if event.type == EventType.RESYNC:
                    log.info("watch history compacted at %s: re-listing", event.revision)
                    return True
                assert event.key is not None
                if self._covered(event.key, event.revision):
                    self.revision = event.revision
                    continue
                if event.type == EventType.DELETE:
                    self.cache.pop(event.key, None)
                    update = Update(event.key, None, event.revision)
                else:
                    assert event.value is not None
                    self.cache[event.key] = (event.revision, event.value)
                    update = Update(event.key, event.value, event.revision)
                self.revision = event.revision
                self._on_updates([update])
        finally:
            watch.close()
            self._watch = None
        return False

    def _covered(self, key: Key, revision: str) -> bool:
        """Whether a list taken at or after ``revision`` already gave ``key``'s state."""
        rev = int(revision)
        return any(r >= rev and _lists(opts, key) for opts, r in self._listed)


def _lists(options: ListOptions, key: Key) -> bool:
    """Whether ``options`` lists ``key`` (the key range, name prefix and node filter)."""
    if not key.path.startswith(options.prefix):
        return False
    if isinstance(key, ResourceKey):
        return key.name.startswith(options.name_prefix) and options.accepts_node(key)
    return True
