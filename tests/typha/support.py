"""Test support for Typha: a real calico-typha process and collecting clients."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any, Callable

from datastore.keys import ResourceKey
from datastore.syncer import SyncStatus, Update
from tests.support.etcd_server import free_port
from tests.support.process import stop_process
from typha.client import TyphaSyncer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for(cond: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")


def wep(ns: str, name: str, ip: str = "10.0.0.1", extra: str = "") -> tuple[ResourceKey, dict[str, Any]]:
    key = ResourceKey("WorkloadEndpoint", name, ns)
    value = {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "x"}},
        "spec": {"node": "node1", "orchestrator": "k8s", "endpoint": "eth0", "pod": name,
                 "interfaceName": f"cali{abs(hash(name)) % 10**10}", "ipNetworks": [f"{ip}/32"],
                 "profiles": [f"kns.{ns}"], "extra": extra},
    }
    return key, value


class TyphaProcess:
    """calico-typha as a subprocess on fixed loopback ports (kept across restarts)."""

    def __init__(self, etcd_endpoint: str, **env: str) -> None:
        self.port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({
            "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": etcd_endpoint,
            "TYPHA_SERVERHOST": "127.0.0.1", "TYPHA_SERVERPORT": str(self.port),
            "TYPHA_HEALTHHOST": "127.0.0.1", "TYPHA_HEALTHPORT": str(self.health_port),
            "TYPHA_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "TYPHA_PROMETHEUSMETRICSPORT": str(self.metrics_port),
            "TYPHA_LOGSEVERITYSCREEN": "INFO",
            "TYPHA_SHUTDOWNTIMEOUTSECS": "0",
        })
        self.env.update(env)
        self.log_path = tempfile.mktemp(prefix="typha-", suffix=".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> "TyphaProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "typha.main"], cwd=REPO, env=self.env,
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        if ready:
            wait_for(lambda: self.http(self.health_port, "/readiness")[0] == 200, 20, 0.05, "Typha readiness")
        return self

    def http(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        _, text = self.http(self.metrics_port, "/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, grace=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def cleanup(self) -> None:
        self.stop()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class Collector:
    """A TyphaSyncer that keeps the state it was given and every update, with arrival times."""

    def __init__(self, addr: str, node: str, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}
        self.log: list[tuple[str, Any, str]] = []
        self.arrivals: dict[tuple[str, str], float] = {}
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.lock = threading.Lock()
        kwargs.setdefault("ping_interval", 1.0)
        self.syncer = TyphaSyncer(addr, node, self._updates, self._status, **kwargs)

    def start(self) -> "Collector":
        self.syncer.start()
        return self

    def _updates(self, updates: list[Update]) -> None:
        now = time.monotonic()
        with self.lock:
            for u in updates:
                path = u.key.path
                self.log.append((path, u.value, u.revision))
                self.arrivals[(path, u.revision)] = now
                if u.value is None:
                    self.state.pop(path, None)
                else:
                    self.state[path] = u.value

    def _status(self, status: SyncStatus) -> None:
        self.status = status

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.state)

    def stop(self) -> None:
        self.syncer.stop()


def etcd_state(backend: Any) -> dict[str, Any]:
    from datastore.keys import ListOptions
    from typha.main import FELIX_KINDS

    out: dict[str, Any] = {}
    for kind in FELIX_KINDS:
        for kv in backend.list(ListOptions(kind)).items:
            out[kv.key.path] = kv.value
    return out


def raw_connect(addr: str, hello: bool = True) -> socket.socket:
    from typha import proto

    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    if hello:
        sock.sendall(proto.encode({"type": "hello", "node": "raw", "version": proto.PROTOCOL_VERSION,
                                   "syncerType": "felix"}))
    return sock


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Read until EOF/reset; True if the server closed the connection within timeout."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(1 << 16):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


class TyphaService:
    """A Kubernetes Service for Typha and its EndpointSlices, written by hand
    (the test kube-apiserver runs no endpoint controllers): one slice per
    Typha, as the EndpointSlice controller makes when ports differ."""

    PORT_NAME = "calico-typha"

    def __init__(self, kube: Any, name: str, namespace: str = "kube-system") -> None:
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.slices: list[str] = []

    def create(self) -> "TyphaService":
        self.kube.must("POST", f"/api/v1/namespaces/{self.namespace}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": {"k8s-app": self.name}},
            "spec": {"selector": {"k8s-app": self.name},
                     "ports": [{"name": self.PORT_NAME, "port": 5473, "protocol": "TCP",
                                "targetPort": self.PORT_NAME}]},
        })
        return self

    def add(self, suffix: str, port: int, ip: str = "198.18.0.1", node: str | None = None,
            ready: bool = True, port_name: str = PORT_NAME) -> str:
        name = f"{self.name}-{suffix}"
        endpoint: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
        if node:
            endpoint["nodeName"] = node
        self.kube.must("POST", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": {"kubernetes.io/service-name": self.name}},
            "addressType": "IPv4",
            "endpoints": [endpoint],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        })
        self.slices.append(name)
        return name

    def add_typha(self, suffix: str, typha: "TyphaProcess", node: str | None = None) -> str:
        host, _, port = typha.addr.rpartition(":")
        return self.add(suffix, int(port), ip=host, node=node)

    def remove(self, name: str) -> None:
        self.kube.request("DELETE", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices/{name}")
        if name in self.slices:
            self.slices.remove(name)

    def cleanup(self) -> None:
        for name in list(self.slices):
            self.remove(name)
        self.kube.request("DELETE", f"/api/v1/namespaces/{self.namespace}/services/{self.name}")


class HostAddress:
    """A non-loopback address of this host for Typhas to listen on (EndpointSlices
    refuse loopback addresses): a /32 from 198.18.0.0/15 (benchmarking range) on a
    veth pair of the test's own (no dummy module here), removed by ``cleanup()``."""

    def __init__(self) -> None:
        import random
        import uuid

        self.link = f"tyd{uuid.uuid4().hex[:8]}"
        self.ip = f"198.{random.choice((18, 19))}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        subprocess.run(["ip", "link", "add", self.link, "type", "veth", "peer", "name", self.link + "p"], check=True)
        try:
            subprocess.run(["ip", "addr", "add", f"{self.ip}/32", "dev", self.link], check=True)
            subprocess.run(["ip", "link", "set", self.link + "p", "up"], check=True)
            subprocess.run(["ip", "link", "set", self.link, "up"], check=True)
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        subprocess.run(["ip", "link", "del", self.link], check=False, capture_output=True)


def listen_on(typha: TyphaProcess, host: str) -> TyphaProcess:
    """Make ``typha`` (not started yet) serve on ``host`` instead of 127.0.0.1."""
    typha.port = free_port(host)
    typha.addr = f"{host}:{typha.port}"
    typha.env.update({"TYPHA_SERVERHOST": host, "TYPHA_SERVERPORT": str(typha.port)})
    return typha


def kdd_typha(kube: Any, host: str = "127.0.0.1", **env: str) -> TyphaProcess:
    """A calico-typha on the Kubernetes datastore of ``kube``, listening on ``host``."""
    base = {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": kube.kubeconfig, "ETCD_ENDPOINTS": ""}
    base.update(env)
    return listen_on(TyphaProcess("", **base), host)
