"""Logging as upstream's CNI plugin does it: stderr plus ``log_file_path``.

Never stdout: stdout carries only the CNI result.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR}


_service_files: dict[str, logging.Handler] = {}
_service_lock = threading.Lock()


def setup_logging(level: str, log_file_path: str | None, tag: str) -> None:
    from cni import hosting

    if hosting.in_service:
        _service_log_file(log_file_path)
        return
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    fmt = logging.Formatter(
        f"%(asctime)s [%(levelname)s][{os.getpid()}] {tag} %(name)s: %(message)s"
    )
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    for noisy in ("pyroute2", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_file_path:
        try:
            os.makedirs(os.path.dirname(log_file_path) or ".", exist_ok=True)
            handler = logging.FileHandler(log_file_path)
            handler.setFormatter(fmt)
            root.addHandler(handler)
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot log to %s: %s", log_file_path, exc)


def _service_log_file(log_file_path: str | None) -> None:
    """Inside the CNI service (many requests, many threads): never touch the
    root's handlers or level; only add each netconf's log file, once."""
    if not log_file_path:
        return
    with _service_lock:
        if log_file_path in _service_files:
            return
        try:
            os.makedirs(os.path.dirname(log_file_path) or ".", exist_ok=True)
            handler = logging.FileHandler(log_file_path)
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot log to %s: %s", log_file_path, exc)
            return
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s [%(levelname)s][{os.getpid()}/%(threadName)s] calico-cni-service %(name)s: %(message)s"))
        _service_files[log_file_path] = handler
        logging.getLogger().addHandler(handler)
