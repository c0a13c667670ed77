"""Kubernetes watches turned into datastore :class:`WatchEvent` streams.

Each source (one API collection) is watched on its own thread with
``allowWatchBookmarks=true``; all feed one queue. When the API server ends a
watch normally (its timeout) the source re-opens it from the last
resourceVersion seen, bookmarks included, so a quiet watch does not fall
behind the server's compaction. ``410 Gone`` (as an HTTP status or an ERROR
event) means the history is lost: the watch yields RESYNC and ends, and the
consumer re-lists (see :mod:`datastore.syncer`).
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterator

from datastore.backend import EventType, WatchEvent
from datastore.errors import DatastoreError, Unavailable
from datastore.keys import Key
from datastore.kubernetes.errors import raise_for
from datastore.kubernetes.mappings import Source
from datastore.kubernetes.transport import ApiError, Transport

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 300  # server-side; the source then resumes from its last revision
_END = object()


class _Gone(Exception):
    pass


class KubeWatch:
    def __init__(self, api: Transport, sources: list[Source], revision: str,
                 timeout_seconds: int = WATCH_TIMEOUT_SECONDS) -> None:
        self._api = api
        self._sources = sources
        self._timeout_seconds = timeout_seconds
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._closed = threading.Event()
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self.revision = revision  # newest resourceVersion seen (events and bookmarks)
        self.bookmarks = 0
        self._threads = [
            threading.Thread(target=self._run, args=(src, revision), name=f"kube-watch-{i}", daemon=True)
            for i, src in enumerate(sources)
        ]
        # Open the first stream synchronously so errors (403, unreachable) surface
        # from watch() itself, like the etcd backend.
        self._first = [self._open(src, revision) for src in sources]
        for thread in self._threads:
            thread.start()

    def _open(self, src: Source, revision: str) -> Any:
        query = dict(src.query)
        query.update({
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": revision,
            "timeoutSeconds": self._timeout_seconds,
        })
        try:
            stream = self._api.stream(src.path, query)
        except ApiError as exc:
            if exc.status == 410:
                return _Gone()
            raise_for(exc, src.path)
        with self._lock:
            if self._closed.is_set():
                stream.close()
            self._streams.append(stream)
        return stream

    def _run(self, src: Source, revision: str) -> None:
        index = self._sources.index(src)
        stream: Any = self._first[index]
        visible: set[Key] = set()
        try:
            while not self._closed.is_set():
                if isinstance(stream, _Gone):
                    raise _Gone()
                for event in stream:
                    revision = self._handle(src, event, revision, visible)
                with self._lock:
                    if stream in self._streams:
                        self._streams.remove(stream)
                if self._closed.is_set():
                    break
                log.debug("watch on %s ended at %s: resuming", src.path, revision)
                stream = self._open(src, revision)
        except _Gone:
            self._queue.put(WatchEvent(EventType.RESYNC, revision=revision))
            self._queue.put(_END)
        except (DatastoreError, Unavailable) as exc:
            if not self._closed.is_set():
                self._queue.put(exc)
        except Exception as exc:  # noqa: BLE001 - surface anything to the consumer
            if not self._closed.is_set():
                self._queue.put(Unavailable("Kubernetes watch failed", exc))

    def _handle(self, src: Source, event: dict[str, Any], revision: str, visible: set[Key]) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise _Gone()
            raise Unavailable(f"Kubernetes watch error: {obj.get('message', obj)}")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or revision)
        if kind == "BOOKMARK":
            self.bookmarks += 1
            self._advance(rv)
            return rv
        pairs = [(k, v) for k, v in src.convert(obj) if src.accept(k)]
        if kind == "DELETED":
            for key, value in pairs:
                visible.discard(key)
                self._queue.put(WatchEvent(EventType.DELETE, key, None, rv, value))
        elif kind in ("ADDED", "MODIFIED"):
            if not pairs and kind == "MODIFIED":
                # The object stopped standing for a datastore key (e.g. an IPAM
                # object marked deleted): report the keys it stood for as gone.
                try:
                    gone = [k for k, _ in _convert_ignoring_state(src, obj)]
                except Exception:  # noqa: BLE001
                    gone = []
                for key in gone:
                    if key in visible:
                        visible.discard(key)
                        self._queue.put(WatchEvent(EventType.DELETE, key, None, rv))
            for key, value in pairs:
                visible.add(key)
                self._queue.put(WatchEvent(EventType.PUT, key, value, rv))
        self._advance(rv)
        return rv

    def _advance(self, rv: str) -> None:
        try:
            if int(rv) > int(self.revision or 0):
                self.revision = rv
        except ValueError:
            self.revision = rv

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            if self._closed.is_set() and self._queue.empty():
                return
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _END:
                self.close()
                return
            if isinstance(item, BaseException):
                self.close()
                raise item
            yield item

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass


def _convert_ignoring_state(src: Source, obj: dict[str, Any]) -> list[tuple[Key, Any]]:
    """Keys an object would map to if it were live (soft-deleted IPAM objects)."""
    spec = obj.get("spec")
    if isinstance(spec, dict) and spec.get("deleted") not in (None, False, "false"):
        live = dict(obj)
        live_spec = dict(spec)
        live_spec["deleted"] = "false" if isinstance(spec.get("deleted"), str) else False
        live["spec"] = live_spec
        return src.convert(live)
    return []
