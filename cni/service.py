"""The node's CNI service: the fast path for the ``calico`` and
``calico-ipam`` executables (see :mod:`cni.shim` for the protocol).

    python -m cni.service [--socket /var/run/calico/cni.sock] [--log-level info]

One implementation, two hosts: requests run the very handlers of
:mod:`cni.plugin` and :mod:`ipam.plugin`, here with imports already paid, one
warm datastore client per datastore configuration, calico-ipam called
in-process instead of exec'd (other IPAM plugins are still exec'd), and the
host IPAM lock taken first as a thread lock in this process (the file lock is
still taken too: standalone executables may run beside the service). Each
request runs in its own thread. The socket is root-only (0600).
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from cni import hosting
from cni.errors import INTERNAL_ERROR, INVALID_ENVIRONMENT, CNIError
from cni.shim import DEFAULT_SOCKET, recv_frame, send_frame
from cni.skel import CmdArgs, error_version, read_args, version_result

log = logging.getLogger("calico-cni-service")

ABOUT = {"calico": "calico", "calico-ipam": "Calico CNI IPAM plugin (pycalico)"}
HANDSHAKE_TIMEOUT = 5.0
IPAM_LOCK_TIMEOUT = 90.0


# -- warm state ---------------------------------------------------------------------


class _SharedBackend:
    """A cached backend lent to one request: ``close()`` keeps it open."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class BackendCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: dict[tuple[Any, ...], Any] = {}

    def get(self, config: Any) -> Any:
        from datastore.config import connect

        key = dataclasses.astuple(config)
        with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                backend = connect(config)
                self._backends[key] = backend
                log.info("datastore client for %s %s", config.datastore_type,
                         config.etcd_endpoints or config.kubeconfig or "")
        return _SharedBackend(backend)

    def close(self) -> None:
        with self._lock:
            for backend in self._backends.values():
                try:
                    backend.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing a datastore client")
            self._backends.clear()


_ipam_thread_locks: dict[str, threading.Lock] = {}
_ipam_thread_locks_guard = threading.Lock()


@contextmanager
def ipam_lock(path: str | None, file_lock: Any) -> Iterator[Any]:
    """The host IPAM lock for a request in this process: threads queue on a
    lock of ours, then the one holding it takes the file lock (contended only
    by standalone executables)."""
    key = path or ""
    with _ipam_thread_locks_guard:
        lock = _ipam_thread_locks.setdefault(key, threading.Lock())
    got = lock.acquire(timeout=IPAM_LOCK_TIMEOUT)
    if not got:
        log.error("timed out waiting for the in-process IPAM lock %s: proceeding unlocked", key)
    try:
        with file_lock:
            yield file_lock
    finally:
        if got:
            lock.release()


def ipam_inprocess(args: CmdArgs, command: str, stdin: bytes | None) -> dict[str, Any] | None:
    """What exec'ing calico-ipam would do (same env rewrite, same parsing,
    same errors), as a call."""
    from ipam.plugin import HANDLERS

    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": args.container_id,
        "CNI_NETNS": args.netns,
        "CNI_IFNAME": args.ifname,
        "CNI_PATH": ":".join(args.path),
        "CNI_ARGS": ("IgnoreUnknown=1;" + args.args) if args.args else "IgnoreUnknown=1",
    }
    data = args.stdin if stdin is None else stdin
    try:
        ipam_args = read_args(env, data)
        handler = HANDLERS.get(ipam_args.command)
        if handler is None:
            raise CNIError(INVALID_ENVIRONMENT, f"{ABOUT['calico-ipam']} does not implement {command}")
        result = handler(ipam_args)
    except CNIError:
        raise
    except Exception as exc:  # noqa: BLE001 - as the executable would report it
        log.exception("calico-ipam %s failed", command)
        raise CNIError(INTERNAL_ERROR, f"internal error in {ABOUT['calico-ipam']}: {type(exc).__name__}",
                       str(exc)) from None
    if result is None:
        return None
    out = json.loads(json.dumps(result))
    return out if isinstance(out, dict) else None


def _handlers(plugin: str) -> Mapping[str, Callable[[CmdArgs], Any]]:
    if plugin == "calico-ipam":
        from ipam.plugin import HANDLERS as IPAM_HANDLERS

        return IPAM_HANDLERS
    from cni.plugin import HANDLERS

    return HANDLERS


def dispatch(plugin: str, environ: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """One CNI invocation, as :func:`cni.skel.run` does it, returning
    (exit status, stdout) instead of writing them."""
    about = ABOUT.get(plugin, plugin)
    hosting.set_request_environ(environ)
    try:
        if environ.get("CNI_COMMAND") == "VERSION":
            return 0, _dump(version_result(stdin))
        args = read_args(environ, stdin)
        handler = _handlers(plugin).get(args.command)
        if handler is None:
            raise CNIError(INVALID_ENVIRONMENT, f"{about} does not implement {args.command}")
        result = handler(args)
        return 0, (_dump(result) if result is not None else "")
    except CNIError as err:
        logging.getLogger("cni").error("code %d: %s", err.code, err)
        return 1, _dump(err.to_json(error_version(stdin)))
    except Exception as exc:  # noqa: BLE001 - the spec wants JSON, never a traceback
        log.exception("unexpected error in %s", plugin)
        err = CNIError(INTERNAL_ERROR, f"internal error in {about}: {type(exc).__name__}", str(exc))
        return 1, _dump(err.to_json(error_version(stdin)))
    finally:
        hosting.set_request_environ(None)


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj) + "\n"


def warm_up() -> None:
    """Pay every import of the ADD/DEL path now, not on the first pod."""
    import cni.dataplane  # noqa: F401
    import cni.plugin  # noqa: F401
    import ipam.allocator  # noqa: F401
    import ipam.gc  # noqa: F401
    import ipam.lock  # noqa: F401
    import ipam.plugin  # noqa: F401
    import ipam.release  # noqa: F401
    import ipam.retry  # noqa: F401
    import ipam.store  # noqa: F401
    import pyroute2  # noqa: F401

    try:
        import datastore.etcd  # noqa: F401
        import etcd3gw  # noqa: F401
    except ImportError:
        pass


def install_hooks(cache: BackendCache) -> None:
    hosting.backend_factory = cache.get
    hosting.inprocess_ipam = ipam_inprocess
    hosting.ipam_lock = ipam_lock
    hosting.in_service = True


# -- the socket ------------------------------------------------------------------------


class Service:
    def __init__(self, path: str) -> None:
        self.path = path
        self.cache = BackendCache()
        self.served = 0
        self._count_lock = threading.Lock()
        self._inflight = 0
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Listen on ``path``, created 0600 (root only) and swapped in atomically."""
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        sock.listen(128)
        os.rename(tmp, self.path)
        self._sock = sock
        log.info("CNI service listening on %s", self.path)

    def serve_forever(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(0.5)
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            threading.Thread(target=self._handle, args=(conn,), name="cni-request", daemon=True).start()

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting (the shims then run standalone), finish in-flight requests."""
        self._stopping.set()
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)
        except OSError:
            pass
        if self._sock is not None:
            self._sock.close()
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.cache.close()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(HANDSHAKE_TIMEOUT)
                request = recv_frame(conn)
                if not isinstance(request, dict):
                    return
                if request.get("op") == "stats":
                    send_frame(conn, {"served": self.served, "inflight": self._inflight})
                    return
                if request.get("v") != 1 or self._stopping.is_set():
                    send_frame(conn, {"accepted": False, "reason": "unsupported or stopping"})
                    return
                plugin = str(request.get("plugin") or "calico")
                environ = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
                stdin = base64.b64decode(request.get("stdin") or "")
                send_frame(conn, {"accepted": True})
                go = recv_frame(conn)
                if not isinstance(go, dict) or go.get("go") is not True:
                    return
            except (OSError, ValueError, ConnectionError) as exc:
                log.debug("request dropped before it was handed over: %s", exc)
                return
            with self._count_lock:
                self._inflight += 1
            try:
                start = time.perf_counter()
                code, out = dispatch(plugin, environ, stdin)
                log.debug("%s %s %s: exit %d in %.1f ms", plugin, environ.get("CNI_COMMAND"),
                          environ.get("CNI_CONTAINERID"), code, (time.perf_counter() - start) * 1000)
                try:
                    send_frame(conn, {"code": code, "stdout": out})
                except OSError as exc:
                    log.warning("could not return the result of %s %s: %s", plugin,
                                environ.get("CNI_COMMAND"), exc)
            finally:
                with self._count_lock:
                    self._inflight -= 1
                    self.served += 1


def stats(path: str, timeout: float = 2.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        send_frame(sock, {"op": "stats"})
        reply = recv_frame(sock)
    return reply if isinstance(reply, dict) else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pycalico node-local CNI service (CNI fast path)")
    parser.add_argument("--socket", default=os.environ.get("PYCALICO_CNI_SOCKET") or DEFAULT_SOCKET)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-file", default=None)
    opts = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, opts.log_level.upper(), logging.INFO),
        format="%(asctime)s [%(levelname)s][%(threadName)s] %(name)s: %(message)s",
        filename=opts.log_file,
    )
    for noisy in ("pyroute2", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warm_up()
    service = Service(opts.socket)
    install_hooks(service.cache)
    service.bind()

    def on_signal(signum: int, frame: object) -> None:
        service._stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service.serve_forever()
    finally:
        service.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
