"""The one backend interface every datastore implements (etcd v3, Kubernetes).

Backends move JSON-able dicts keyed by :mod:`datastore.keys`; typed models
live one layer up (:mod:`datastore.client`). Every write that takes a
revision is a compare-and-swap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterator, Protocol

from datastore.keys import Key, ListOptions


@dataclass
class KVPair:
    key: Key
    value: dict[str, Any]
    revision: str = ""  # opaque; etcd ModRevision / Kubernetes resourceVersion


@dataclass
class ListResult:
    items: list[KVPair]
    revision: str  # datastore revision the list is consistent with; watch from here


class EventType(str, Enum):
    PUT = "put"  # created or updated
    DELETE = "delete"
    RESYNC = "resync"  # history was lost: the consumer must re-list and resync


@dataclass
class WatchEvent:
    type: EventType
    key: Key | None = None
    value: dict[str, Any] | None = None  # None for deletes and resyncs
    revision: str = ""
    previous: dict[str, Any] | None = field(default=None, repr=False)


class Watch(Protocol):
    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Datastore backend. All methods raise :mod:`datastore.errors` types."""

    def get(self, key: Key) -> KVPair: ...

    def list(self, options: ListOptions) -> ListResult: ...

    def create(self, key: Key, value: dict[str, Any]) -> KVPair: ...

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        """Replace the value iff the stored revision equals ``revision``
        (raises Conflict when it does not, NotFound when the key is gone)."""
        ...

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        """Create or replace unconditionally."""
        ...

    def delete(self, key: Key, revision: str | None = None) -> None:
        """Delete; with ``revision``, only if the stored revision matches."""
        ...

    def watch(self, options: ListOptions | list[ListOptions], revision: str) -> Watch:
        """Events after ``revision`` in datastore order. If that history was
        compacted the first event is RESYNC and the watch ends."""
        ...

    def ping(self) -> None:
        """Raise Unavailable if the datastore cannot be reached."""
        ...

    def close(self) -> None: ...
