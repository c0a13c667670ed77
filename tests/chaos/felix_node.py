"""Felix running inside a simulated node's netns (its nftables and routes stay
there), talking to the fabric's etcd like the node's other components."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.support.cni_exec import VENV_BIN
from tests.support.nodes import NetnsProcess, SimNode, connect_in_netns, netns_exec

HEALTH_PORT = 9099
METRICS_PORT = 9091


def netns_http(netns: str, port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path> inside ``netns``: (status, body), (0, "") when unreachable."""
    try:
        sock = connect_in_netns(f"/var/run/netns/{netns}", ("127.0.0.1", port), timeout=2)
    except OSError:
        return 0, ""
    try:
        sock.settimeout(5)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:
        return 0, ""
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), body.decode(errors="replace")
    except (IndexError, ValueError):
        return 0, ""


class NodeTypha:
    """calico-typha inside a node's netns, serving on the node's address."""

    PORT = 5473
    HEALTH_PORT = 9098

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.addr = f"{node.ip}:{self.PORT}"
        self.log_path = os.path.join(node.workdir, "typha.log")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": node.cluster.etcd_endpoint,
            "TYPHA_SERVERHOST": "0.0.0.0", "TYPHA_SERVERPORT": str(self.PORT),
            "TYPHA_HEALTHENABLED": "true", "TYPHA_HEALTHHOST": "127.0.0.1", "TYPHA_HEALTHPORT": str(self.HEALTH_PORT),
            "TYPHA_LOGSEVERITYSCREEN": "INFO", "TYPHA_SHUTDOWNTIMEOUTSECS": "0",
        }
        self.proc: NetnsProcess | None = None

    def start(self, timeout: float = 60) -> "NodeTypha":
        self.proc = NetnsProcess(self.node.netns, [os.path.join(VENV_BIN, "calico-typha")], self.log_path, self.env)
        deadline = time.monotonic() + timeout
        while netns_http(self.node.netns, self.HEALTH_PORT, "/readiness")[0] != 200:
            if not self.proc.alive() or time.monotonic() > deadline:
                raise AssertionError(f"Typha not ready:\n{self.proc.log()[-3000:]}")
            time.sleep(0.1)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class NodeFelix:
    def __init__(self, node: SimNode, extra_env: dict[str, str] | None = None) -> None:
        self.node = node
        self.log_path = os.path.join(node.workdir, "felix.log")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": node.cluster.etcd_endpoint,
            "FELIX_FELIXHOSTNAME": node.name,
            "FELIX_HEALTHENABLED": "true",
            "FELIX_HEALTHHOST": "127.0.0.1",
            "FELIX_HEALTHPORT": str(HEALTH_PORT),
            "FELIX_PROMETHEUSMETRICSENABLED": "true",
            "FELIX_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "FELIX_PROMETHEUSMETRICSPORT": str(METRICS_PORT),
            "FELIX_NFTABLESREFRESHINTERVAL": "2",
            "FELIX_ROUTEREFRESHINTERVAL": "2",
            "FELIX_LOGFILEPATH": "none",
            "FELIX_LOGSEVERITYSCREEN": "Info",
            "FELIX_CONFIGFILE": os.path.join(node.workdir, "felix.cfg"),
            **(extra_env or {}),
        }
        self.proc: NetnsProcess | None = None

    def start(self) -> "NodeFelix":
        self.proc = NetnsProcess(self.node.netns, [os.path.join(VENV_BIN, "calico-felix")], self.log_path,
                                 self.env)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def http(self, port: int, path: str) -> tuple[int, str]:
        return netns_http(self.node.netns, port, path)

    def applied_revision(self) -> int:
        status, body = self.http(METRICS_PORT, "/metrics")
        if status != 200:
            return -1
        for line in body.splitlines():
            if line.startswith("felix_applied_datastore_revision "):
                return int(float(line.split()[1]))
        return -1

    def wait(self, revision: int = 0, timeout: float = 60.0) -> float:
        """Until Felix is ready and has applied ``revision``; returns the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is None or not self.proc.alive():
                raise AssertionError(f"Felix exited:\n{self.log()[-3000:]}")
            if self.http(HEALTH_PORT, "/readiness")[0] == 200 and self.applied_revision() >= revision:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"Felix on {self.node.name} not at revision {revision} after {timeout}s "
                             f"(at {self.applied_revision()}):\n{self.log()[-3000:]}")

    def ruleset(self) -> str:
        """The node's nftables rules without counters."""
        return netns_exec(self.node.netns, "nft", "-s", "list", "ruleset").stdout

    def log(self) -> str:
        return self.proc.log() if self.proc is not None else ""


def allow_all_profile(cluster) -> int:  # type: ignore[no-untyped-def]
    """``kns.default`` allowing everything, as for a namespace without policy; returns its revision."""
    from datastore.keys import ResourceKey

    kv = cluster.backend.create(ResourceKey("Profile", "kns.default"), {
        "apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "kns.default"},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}})
    return int(kv.revision)


def current_revision(cluster) -> int:  # type: ignore[no-untyped-def]
    from datastore.keys import ListOptions

    return int(cluster.backend.list(ListOptions("Profile")).revision)


def tc(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "tc", *args], check=True, capture_output=True)
