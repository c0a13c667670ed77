"""A syncer over several kinds lists them one after another: a change to a kind
listed early that lands before a later list is in no list, so the watch must
start after the earliest list, not the latest (a lost update otherwise), and
must not deliver again what a later list already gave.

Deterministic: the changes are made from inside the backend's ``list``, between
the syncer's first and second list. A fake backend covers the pure logic; the
same race runs against a real etcd and a real kube-apiserver.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

import pytest

from datastore.backend import EventType, KVPair, ListResult, WatchEvent
from datastore.errors import Unavailable
from datastore.keys import Key, ListOptions, ResourceKey
from datastore.syncer import SyncStatus, Syncer, Update
from tests.kubernetes.fixtures import unique_name

POOLS, SETS = ListOptions("IPPool"), ListOptions("GlobalNetworkSet")


def pool(name: str, cidr: str) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr}}


def netset(name: str, net: str) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": name},
            "spec": {"nets": [net]}}


class ChangeBetweenLists:
    """A backend whose first list of ``options[0]`` runs ``change`` right after it."""

    def __init__(self, inner: Any, first: ListOptions, change: Any) -> None:
        self._inner, self._first, self._change = inner, first, change
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def list(self, options: ListOptions) -> ListResult:
        result = self._inner.list(options)
        if options == self._first and not self._done:
            self._done = True
            self._change()
        return result


def _changes(backend: Any, tag: str) -> tuple[dict[str, Key], Any]:
    """Keys that exist before the syncer starts, and the change made between its lists:
    an IPPool updated, an IPPool deleted (both listed before the change) and a
    GlobalNetworkSet created (listed after it)."""
    keys = {
        "changed": ResourceKey("IPPool", f"{tag}-changed"),
        "deleted": ResourceKey("IPPool", f"{tag}-deleted"),
        "set": ResourceKey("GlobalNetworkSet", f"{tag}-set"),
        "sentinel": ResourceKey("GlobalNetworkSet", f"{tag}-sentinel"),
        "pool_sentinel": ResourceKey("IPPool", f"{tag}-sentinel"),
    }
    backend.create(keys["changed"], pool(keys["changed"].name, "10.71.0.0/16"))
    backend.create(keys["deleted"], pool(keys["deleted"].name, "10.72.0.0/16"))

    def change() -> None:
        kv = backend.get(keys["changed"])
        value = dict(kv.value, spec=dict(kv.value["spec"], cidr="10.73.0.0/16"))
        backend.update(keys["changed"], value, kv.revision)
        backend.delete(keys["deleted"], backend.get(keys["deleted"]).revision)
        backend.create(keys["set"], netset(keys["set"].name, "192.0.2.0/24"))

    return keys, change


def _run(backend: Any, keys: dict[str, Key], write_sentinel: Any) -> list[Update]:
    """Sync until the sentinels (written once in sync, after the change) show up;
    every update about the test's keys, in order.

    One sentinel per kind: the Kubernetes datastore watches each kind on its own
    stream, with no order across kinds, so only an IPPool written after the change
    proves every earlier IPPool event has been delivered."""
    updates: "queue.Queue[Update]" = queue.Queue()
    in_sync = threading.Event()

    def status(s: SyncStatus) -> None:
        if s == SyncStatus.IN_SYNC:
            in_sync.set()

    syncer = Syncer(backend, [POOLS, SETS], lambda batch: [updates.put(u) for u in batch], status,
                    max_backoff=0.5).start()
    mine = set(keys.values())
    seen: list[Update] = []
    try:
        assert in_sync.wait(30), "syncer never in sync"
        write_sentinel()
        backend.create(keys["pool_sentinel"], pool(keys["pool_sentinel"].name, "10.74.0.0/16"))
        deadline = time.monotonic() + 30
        while not all(any(u.key == keys[s] for u in seen) for s in ("sentinel", "pool_sentinel")):
            assert time.monotonic() < deadline, [(u.key.name, u.value is not None, u.revision) for u in seen]
            try:
                u = updates.get(timeout=0.2)
            except queue.Empty:
                continue
            if u.key in mine:
                seen.append(u)
    finally:
        syncer.stop()
    return seen


def _check(seen: list[Update], keys: dict[str, Key]) -> None:
    def about(name: str) -> list[Update]:
        return [u for u in seen if u.key == keys[name]]

    changed = about("changed")
    assert changed and changed[-1].value is not None, changed
    assert changed[-1].value["spec"]["cidr"] == "10.73.0.0/16", "the update between the lists was lost"
    deleted = about("deleted")
    assert deleted and deleted[-1].value is None, "the delete between the lists was lost"
    # Listed after the change: delivered once, by the list, not again by the watch.
    assert len(about("set")) == 1, about("set")
    revisions = [int(u.revision) for u in seen if u.key == keys["changed"]]
    assert revisions == sorted(revisions)


# -- pure logic: an in-memory backend -------------------------------------------------------


class MemoryBackend:
    """Just enough of a Backend for the syncer: a revisioned key-value store with
    lists and a watch that replays history after a revision."""

    def __init__(self) -> None:
        self.rev = 0
        self.data: dict[Key, KVPair] = {}
        self.history: list[WatchEvent] = []
        self.cond = threading.Condition()

    def _write(self, key: Key, value: dict[str, Any] | None) -> str:
        with self.cond:
            self.rev += 1
            rev = str(self.rev)
            if value is None:
                del self.data[key]
                self.history.append(WatchEvent(EventType.DELETE, key, None, rev))
            else:
                self.data[key] = KVPair(key, value, rev)
                self.history.append(WatchEvent(EventType.PUT, key, value, rev))
            self.cond.notify_all()
            return rev

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        return KVPair(key, value, self._write(key, value))

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        assert self.data[key].revision == revision
        return KVPair(key, value, self._write(key, value))

    def delete(self, key: Key, revision: str | None = None) -> None:
        self._write(key, None)

    def get(self, key: Key) -> KVPair:
        return self.data[key]

    def list(self, options: ListOptions) -> ListResult:
        with self.cond:
            items = [kv for k, kv in self.data.items() if isinstance(k, ResourceKey) and k.kind == options.kind]
            return ListResult(items, str(self.rev))

    def watch(self, options: list[ListOptions], revision: str) -> "MemoryWatch":
        return MemoryWatch(self, {o.kind for o in options}, int(revision))


class MemoryWatch:
    def __init__(self, backend: MemoryBackend, kinds: set[str], revision: int) -> None:
        self.backend, self.kinds, self.next = backend, kinds, revision + 1
        self.closed = False

    def close(self) -> None:
        self.closed = True
        with self.backend.cond:
            self.backend.cond.notify_all()

    def __iter__(self) -> Iterator[WatchEvent]:
        while not self.closed:
            with self.backend.cond:
                pending = [e for e in self.backend.history if int(e.revision) >= self.next]
                if not pending:
                    self.backend.cond.wait(0.5)
                    continue
            for event in pending:
                self.next = int(event.revision) + 1
                assert isinstance(event.key, ResourceKey)
                if event.key.kind in self.kinds:
                    yield event
        return


def test_change_between_lists_pure_logic() -> None:
    backend = MemoryBackend()
    keys, change = _changes(backend, "mem")
    seen = _run(ChangeBetweenLists(backend, POOLS, change), keys,
                lambda: backend.create(keys["sentinel"], netset(keys["sentinel"].name, "192.0.2.128/25")))
    _check(seen, keys)


def test_change_between_lists_resumed_watch_skips_listed_changes() -> None:
    """The watch breaks before it reaches the later list's revision: the resumed
    watch still does not deliver the later kind's listed change again."""
    backend = MemoryBackend()
    keys, change = _changes(backend, "brk")
    real_watch = backend.watch
    first = [True]

    class BreakAfterOne:
        def __init__(self, inner: MemoryWatch) -> None:
            self.inner = inner

        def close(self) -> None:
            self.inner.close()

        def __iter__(self) -> Iterator[WatchEvent]:
            for event in self.inner:
                yield event
                raise Unavailable("watch stream broke")

    def watch(options: list[ListOptions], revision: str) -> Any:
        w = real_watch(options, revision)
        if not first:
            return w
        first.clear()
        return BreakAfterOne(w)

    backend.watch = watch  # type: ignore[method-assign]
    seen = _run(ChangeBetweenLists(backend, POOLS, change), keys,
                lambda: backend.create(keys["sentinel"], netset(keys["sentinel"].name, "192.0.2.128/25")))
    _check(seen, keys)


# -- the real datastores ---------------------------------------------------------------------


@pytest.mark.etcd
def test_change_between_lists(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    keys, change = _changes(backend, unique_name("rl"))
    seen = _run(ChangeBetweenLists(backend, POOLS, change), keys,
                lambda: backend.create(keys["sentinel"], netset(keys["sentinel"].name, "192.0.2.128/25")))
    _check(seen, keys)
