"""The node's CNI service: the fast path for the ``calico`` and
``calico-ipam`` executables (see :mod:`cni.shim` for the protocol).

    python -m cni.service [--socket /var/run/calico/cni.sock] [--log-level info]

or hosted by the node agent: Felix with ``FELIX_CNISERVICEENABLED=true``
serves it from threads of its own process (:func:`start_background`).

One implementation, two hosts: requests run the very handlers of
:mod:`cni.plugin` and :mod:`ipam.plugin`, here with imports already paid, one
warm datastore client per datastore configuration, calico-ipam called
in-process instead of exec'd (other IPAM plugins are still exec'd), and the
host IPAM lock taken first as a thread lock in this process (the file lock is
still taken too: standalone executables may run beside the service). Each
request runs in its own thread. The socket is root-only (0600).

On etcd, a request's first reads (cluster configuration, IP pools, the
network's Profile, the attachment's WorkloadEndpoint and IPAM handles) are one
batched transaction taken when the request first asks for any of them, so an
ADD costs 5 etcd requests (standalone: 10) and a DEL 4 (standalone: 5);
``bench/cni_fastpath.py`` counts them from etcd's own metrics.
"""
from __future__ import annotations

import argparse
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

from cni import hosting, skel
from cni.shim import DEFAULT_SOCKET, MAGIC, recv_frame, send_frame
from cni.skel import CmdArgs

log = logging.getLogger("calico-cni-service")

ABOUT = {"calico": "calico", "calico-ipam": "Calico CNI IPAM plugin (pycalico)"}
HANDSHAKE_TIMEOUT = 5.0
IPAM_LOCK_TIMEOUT = 90.0


# -- warm state ---------------------------------------------------------------------


class _SharedBackend:
    """A cached backend lent to one request: ``close()`` keeps it open.

    Reads of the cluster configuration that every ADD makes (ClusterInformation,
    the IPAM configuration, the IP pools, the network's Profile) come from one
    batched read per request when the backend can batch (etcd: one
    transaction instead of five round trips), taken the first time the request
    asks for any of them. Everything else, and every write, goes straight to
    the datastore."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if name in ("create_and_update", "update_and_delete"):
            # Writes of two keys: neither may be answered from the snapshot afterwards.
            def write_both(*args: Any) -> Any:
                for arg in args:
                    if hasattr(arg, "path"):
                        _forget(arg)
                return attr(*args)

            return write_both
        return attr

    def get(self, key: Any) -> Any:
        snapshot = _snapshot(self._backend, key)
        if snapshot is not None and key in snapshot:
            kv = snapshot[key]
            if kv is None:
                from datastore.errors import NotFound

                raise NotFound(key)
            return kv
        return self._backend.get(key)

    def list(self, options: Any) -> Any:
        snapshot = _snapshot(self._backend, options)
        if snapshot is not None and options in snapshot:
            return snapshot[options]
        return self._backend.list(options)

    def read_many(self, items: list[Any]) -> list[Any]:
        snapshot = _snapshot(self._backend, items[0]) if items else None
        if snapshot is not None and all(item in snapshot for item in items):
            return [snapshot[item] for item in items]
        read_many = getattr(self._backend, "read_many", None)
        if read_many is not None:
            return read_many(items)  # type: ignore[no-any-return]
        from datastore.errors import NotFound
        from datastore.keys import ListOptions

        out: list[Any] = []
        for item in items:  # a backend that cannot batch: one read each
            if isinstance(item, ListOptions):
                out.append(self._backend.list(item))
                continue
            try:
                out.append(self._backend.get(item))
            except NotFound:
                out.append(None)
        return out

    def create(self, key: Any, value: Any) -> Any:
        _forget(key)
        return self._backend.create(key, value)

    def update(self, key: Any, value: Any, revision: str) -> Any:
        _forget(key)
        return self._backend.update(key, value, revision)

    def apply(self, key: Any, value: Any) -> Any:
        _forget(key)
        return self._backend.apply(key, value)

    def delete(self, key: Any, revision: str | None = None) -> None:
        _forget(key)
        self._backend.delete(key, revision)


_request = threading.local()


def _prefetch_items(netconf: dict[str, Any], args: CmdArgs | None) -> list[Any]:
    """What a request reads first: the cluster configuration, the network's
    Profile, and this attachment's WorkloadEndpoint and IPAM handles (its own
    and upstream's legacy one). A guess that does not match what the handlers
    ask for only costs an unused read: the snapshot answers exact keys only."""
    from datastore.keys import HandleKey, IPAMConfigKey, ListOptions, ResourceKey

    items: list[Any] = [
        ResourceKey("ClusterInformation", "default"),
        IPAMConfigKey(),
        ResourceKey("IPAMConfiguration", "default"),
        ListOptions(kind="IPPool"),
    ]
    name = netconf.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        return items
    items.append(ResourceKey("Profile", name))
    if args is None or not args.container_id:
        return items
    try:
        from cni.names import Workload
        from datastore.config import node_name

        cni_args = args.cni_args
        node = node_name(netconf.get("nodename") or None, netconf.get("nodename_file") or None)
        workload = Workload.from_args(node, args.container_id, args.ifname, cni_args)
        items.append(ResourceKey("WorkloadEndpoint", workload.endpoint_name, workload.namespace))
        namespace, pod = cni_args.get("K8S_POD_NAMESPACE"), cni_args.get("K8S_POD_NAME")
        items.append(HandleKey(f"{name}.{args.container_id}"))
        items.append(HandleKey(f"{namespace}.{pod}" if namespace and pod else args.container_id))
    except (OSError, ValueError):
        pass
    return items


def _snapshot(backend: Any, item: Any) -> dict[Any, Any] | None:
    """This request's batched configuration read, taken when the request
    first asks for one of its items; None when ``item`` is not one of them,
    the backend cannot batch or no request is being served."""
    state = getattr(_request, "state", None)
    read_many = getattr(backend, "read_many", None)
    if state is None or read_many is None:
        return None
    if state.get("items") is None:
        state["items"] = _prefetch_items(state["netconf"], state["args"])
    if item not in state["items"]:
        return None
    if state.get("snapshot") is None:
        items = state["items"]
        state["snapshot"] = dict(zip(items, read_many(items)))
    snapshot: dict[Any, Any] = state["snapshot"]
    return snapshot


def _forget(key: Any) -> None:
    state = getattr(_request, "state", None)
    if state is not None and state.get("snapshot"):
        state["snapshot"].pop(key, None)
        if type(key).__name__ == "ResourceKey" and key.kind == "IPPool":
            state["snapshot"] = {k: v for k, v in state["snapshot"].items()
                                 if getattr(k, "kind", None) != "IPPool"}


@contextmanager
def request_scope(stdin: bytes, args: CmdArgs | None = None) -> Iterator[None]:
    """Per-request state (the batched first read) for this thread."""
    try:
        netconf = json.loads(stdin)
    except ValueError:
        netconf = {}
    _request.state = {"netconf": netconf if isinstance(netconf, dict) else {}, "args": args,
                      "items": None, "snapshot": None}
    try:
        yield
    finally:
        _request.state = None


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


def _handlers(plugin: str) -> Mapping[str, Callable[[CmdArgs], Any]]:
    if plugin == "calico-ipam":
        from ipam.plugin import HANDLERS as IPAM_HANDLERS

        return IPAM_HANDLERS
    from cni.plugin import HANDLERS

    return HANDLERS


def dispatch(plugin: str, environ: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """One CNI invocation, as :func:`cni.skel.run` does it (the same
    :func:`cni.skel.dispatch`), with this request's environment and batched
    first read in scope."""
    hosting.set_request_environ(environ)
    try:
        return skel.dispatch(_handlers(plugin), ABOUT.get(plugin, plugin), environ, stdin, _in_request_scope)
    finally:
        hosting.set_request_environ(None)


def _in_request_scope(handler: Callable[[CmdArgs], Any], args: CmdArgs) -> Any:
    with request_scope(args.stdin, args):
        return handler(args)


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
    import cni.netlink  # noqa: F401

    import datastore.etcd  # noqa: F401


def install_hooks(cache: BackendCache) -> None:
    hosting.backend_factory = cache.get
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
                if request[:1] == [b"stats"]:
                    counters = {"served": self.served, "inflight": self._inflight}
                    send_frame(conn, [b"stats", json.dumps(counters).encode()])
                    return
                if request[:1] != [MAGIC] or len(request) < 3 or len(request) % 2 == 0 or self._stopping.is_set():
                    send_frame(conn, [b"declined", b"unsupported request or stopping"])
                    return
                plugin = request[1].decode() or "calico"
                stdin = request[2]
                environ = {os.fsdecode(k): os.fsdecode(v) for k, v in zip(request[3::2], request[4::2])}
                send_frame(conn, [b"accepted"])
                go = recv_frame(conn)
                if go != [b"go"]:
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
                    send_frame(conn, [b"result", str(code).encode(), out.encode()])
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
        send_frame(sock, [b"stats"])
        reply = recv_frame(sock)
    if reply[:1] != [b"stats"] or len(reply) != 2:
        return {}
    counters = json.loads(reply[1])
    return counters if isinstance(counters, dict) else {}


def start_background(path: str) -> Service:
    """Serve the CNI socket from threads of the calling process (the node
    agent hosts the service this way: ``CNIServiceEnabled`` in Felix).
    Returns the service; ``stop()`` it on shutdown."""
    warm_up()
    service = Service(path)
    install_hooks(service.cache)
    service.bind()
    threading.Thread(target=service.serve_forever, name="cni-service", daemon=True).start()
    return service


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
