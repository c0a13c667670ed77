"""Where the CNI handlers run: a short-lived executable (default) or the
node's CNI service (:mod:`cni.service`), which installs the hooks below.

Stdlib only, and cheap: the handlers consult it on every call.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

# Set by the service: build (or reuse) a warm backend for a DatastoreConfig.
backend_factory: Callable[[Any], Any] | None = None
# Set by the service: wrap the host IPAM file lock, (lock file path, HostLock) -> context manager.
ipam_lock: Callable[[Any, Any], Any] | None = None
# True inside the service: logging must not reconfigure the process, and calico-ipam
# always runs in-process.
in_service = False

_request = threading.local()


def set_request_environ(environ: Mapping[str, str] | None) -> None:
    """The environment of the request this thread serves (exec'd IPAM plugins get it)."""
    _request.environ = dict(environ) if environ is not None else None


def request_environ() -> "dict[str, str] | None":
    return getattr(_request, "environ", None)


def connect(config: Any) -> Any:
    """A backend for ``config``: the service's warm one, or a new connection."""
    if backend_factory is not None:
        return backend_factory(config)
    from datastore.config import connect as new_connection

    return new_connection(config)


def host_service(socket_path: str) -> Any:
    """Start the node's CNI service inside the calling process (Felix calls
    this when ``CNIServiceEnabled``); returns it, to ``stop()`` on shutdown."""
    from cni.service import start_background

    return start_background(socket_path)
