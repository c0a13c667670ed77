"""Typed datastore errors shared by every backend."""
from __future__ import annotations


class DatastoreError(Exception):
    """Base class of every datastore error."""


class NotFound(DatastoreError):
    def __init__(self, key: object) -> None:
        super().__init__(f"resource does not exist: {key}")
        self.key = key


class AlreadyExists(DatastoreError):
    def __init__(self, key: object) -> None:
        super().__init__(f"resource already exists: {key}")
        self.key = key


class Conflict(DatastoreError):
    """Compare-and-swap failed: the object changed since ``expected`` was read."""

    def __init__(self, key: object, expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(
            f"update conflict on {key}: expected revision {expected}, datastore has {actual}"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class Unavailable(DatastoreError):
    """The datastore could not be reached or did not answer in time."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"{message}{detail}")
        self.cause = cause


class Compacted(DatastoreError):
    """A watch asked for history that the datastore has compacted away."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {requested} has been compacted (oldest available {compact_revision})"
        )
        self.requested = requested
        self.compact_revision = compact_revision
