"""Run a function inside a network namespace (per-thread setns)."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc: Any = None


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    global _libc
    import ctypes  # Python 3.11: libc's setns(2)

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh thread that has joined the netns at ``path``.

    Network namespaces are per thread, so the caller's thread and every other
    thread stay where they are; the helper thread ends with ``fn``.
    """
    result: list[T] = []
    error: list[BaseException] = []
    target_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def body() -> None:
        try:
            _setns(target_fd)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            error.append(exc)

    try:
        thread = threading.Thread(target=body, name="netns")
        thread.start()
        thread.join()
    finally:
        os.close(target_fd)
    if error:
        raise error[0]
    return result[0]


def write_sysctl(path: str, value: str) -> None:
    """Write ``net/ipv4/conf/eth0/forwarding`` (slash form: interface names
    may contain dots) in the calling thread's netns."""
    with open("/proc/sys/" + path, "w", encoding="ascii") as f:
        f.write(value)


def read_sysctl(path: str) -> str:
    with open("/proc/sys/" + path, encoding="ascii") as f:
        return f.read().strip()
