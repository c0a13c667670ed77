"""Kubernetes API errors mapped onto :mod:`datastore.errors`."""
from __future__ import annotations

from typing import NoReturn

from datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound, Unavailable
from datastore.kubernetes.transport import ApiError


class PermissionDenied(DatastoreError):
    """The API server's RBAC refused the request (HTTP 403) or the credentials (401)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class Invalid(DatastoreError):
    """The API server rejected the object (HTTP 422 / 400)."""


class ResourceExpired(DatastoreError):
    """HTTP 410 Gone: the requested resourceVersion is too old."""


class NotSupported(DatastoreError):
    """The operation has no meaning in the kubernetes datastore (e.g. writing a
    Profile, which mirrors a Namespace)."""


def raise_for(exc: ApiError, key: object, expected: str | None = None) -> NoReturn:
    status = exc.status
    if status == 404:
        raise NotFound(key) from None
    if status == 409:
        if exc.reason == "AlreadyExists":
            raise AlreadyExists(key) from None
        raise Conflict(key, expected, None) from None
    if status == 410:
        raise ResourceExpired(exc.message) from None
    if status == 403:
        raise PermissionDenied(f"permission denied by the Kubernetes API: {exc.message}") from None
    if status == 401:
        raise PermissionDenied(
            f"the Kubernetes API rejected the credentials (401 Unauthorized): {exc.message}", 401
        ) from None
    if status in (400, 422):
        raise Invalid(f"the Kubernetes API rejected {key}: {exc.message}") from None
    if status == 429 or status >= 500:
        raise Unavailable(f"Kubernetes API error {status}", exc) from None
    raise DatastoreError(str(exc)) from None
