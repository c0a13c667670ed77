"""The in-memory snapshot of one syncer type, owned by the server's event loop.

Updates arrive from the datastore syncer's thread (``feed`` / ``feed_status``)
and are applied on the loop: exact repeats (same revision and value) are dropped,
the rest are encoded once as a ``kvs`` frame and offered to every subscriber.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol

from datastore.syncer import SyncStatus, Update
from typha import proto


class Subscriber(Protocol):
    def offer(self, frame: bytes, t0: float) -> None: ...


class SnapshotCache:
    def __init__(self, loop: asyncio.AbstractEventLoop, syncer_type: str = proto.SYNCER_FELIX) -> None:
        self.loop = loop
        self.syncer_type = syncer_type
        self.kvs: dict[str, tuple[str, Any]] = {}  # path -> (revision, value)
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.revision = "0"
        self.subscribers: set[Subscriber] = set()
        self.updates_applied = 0
        self.updates_skipped = 0
        self._snapshot: list[bytes] | None = None
        self.on_change: Callable[[], None] = lambda: None

    # -- from the syncer thread ------------------------------------------------------

    def feed(self, updates: list[Update]) -> None:
        self.loop.call_soon_threadsafe(self.apply, updates, time.monotonic())

    def feed_status(self, status: SyncStatus) -> None:
        self.loop.call_soon_threadsafe(self.set_status, status)

    # -- on the loop ----------------------------------------------------------------

    def apply(self, updates: list[Update], t0: float) -> None:
        out: list[dict[str, Any]] = []
        for u in updates:
            path = u.key.path
            current = self.kvs.get(path)
            if u.value is None:
                if current is None:
                    self.updates_skipped += 1
                    continue
                del self.kvs[path]
            else:
                # Exact repeats only: a value-identical write with a new revision is still
                # passed on, so consumers can track the datastore revision they have seen.
                if current is not None and current == (u.revision, u.value):
                    self.updates_skipped += 1
                    continue
                self.kvs[path] = (u.revision, u.value)
            out.append({"k": path, "v": u.value, "r": u.revision})
            if u.revision.isdigit() and int(u.revision) > int(self.revision):
                self.revision = u.revision
        if not out:
            return
        self.updates_applied += len(out)
        self._snapshot = None
        frame = proto.encode({"type": "kvs", "kvs": out})
        for sub in list(self.subscribers):
            sub.offer(frame, t0)
        self.on_change()

    def set_status(self, status: SyncStatus) -> None:
        if status == self.status:
            return
        self.status = status
        frame = proto.encode({"type": "status", "status": status.value})
        for sub in list(self.subscribers):
            sub.offer(frame, time.monotonic())
        self.on_change()

    def snapshot_frames(self) -> list[bytes]:
        """The current state as encoded ``kvs`` chunks (built once per change)."""
        if self._snapshot is None:
            items = [{"k": k, "v": v, "r": r} for k, (r, v) in self.kvs.items()]
            self._snapshot = [
                proto.encode({"type": "kvs", "kvs": items[i:i + proto.SNAPSHOT_CHUNK]})
                for i in range(0, len(items), proto.SNAPSHOT_CHUNK)
            ]
        return self._snapshot
