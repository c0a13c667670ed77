"""Test harness for Felix: a Felix process, pods made by the real CNI plugin,
probe agents inside the pods, and the reachability matrix.

Pods are network namespaces attached by the ``calico`` CNI plugin (IPAM
host-local on a random /24, so addresses never clash with other tests); the
harness then does what the Kubernetes datastore would do on etcd: it writes
the ``kns.<namespace>`` Profiles and adds the pod labels to each
WorkloadEndpoint.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from datastore.errors import NotFound
from datastore.keys import ListOptions, ResourceKey
from felix.k8s_policy import namespace_profile, network_policy
from tests.support.cni_exec import REPO, exec_plugin
from tests.support.etcd_server import free_port
from tests.support.netns import Netns

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")
FELIX = os.path.join(REPO, ".venv", "bin", "calico-felix")
PORTS = (80, 81)
FLOOD_PORT = 9000
NAMED_PORTS = [{"name": "web", "protocol": "TCP", "port": 80}, {"name": "alt", "protocol": "UDP", "port": 81}]
POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy", "Tier", "NetworkSet", "GlobalNetworkSet")

Probe = tuple[str, int]  # ("tcp", 80), ("udp", 81), ("icmp", 0)
DEFAULT_PROBES: tuple[Probe, ...] = (("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81))


def nft_table_exists(table: str) -> bool:
    return subprocess.run(["nft", "list", "table", "inet", table], capture_output=True).returncode == 0


def nft(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["nft", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def cali_chains(variant: str, version: int = 4) -> set[str]:
    """Our iptables chains ("table/cali-...") in one variant ("legacy" | "nft")."""
    from felix.dataplane.iptables import parse_save, save_text

    saved = parse_save(save_text(variant, version))
    return {f"{t}/{c}" for t, st in saved.items() for c in st.chains if c.startswith("cali-")}


def cali_ipsets() -> set[str]:
    out = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout
    return {n for n in out.split() if n.startswith(("cali40", "cali60"))}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


# -- Felix ---------------------------------------------------------------------------------


class FelixProcess:
    def __init__(self, etcd_endpoint: str, node: str, table: str, workdir: str,
                 extra_env: Optional[dict[str, str]] = None) -> None:
        self.node = node
        self.table = table
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = os.path.join(workdir, "felix.log")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "ETCD_ENDPOINTS": etcd_endpoint,
            "DATASTORE_TYPE": "etcdv3",
            "FELIX_FELIXHOSTNAME": node,
            "FELIX_NFTABLESTABLENAME": table,
            "FELIX_HEALTHENABLED": "true",
            "FELIX_HEALTHPORT": str(self.health_port),
            "FELIX_PROMETHEUSMETRICSENABLED": "true",
            "FELIX_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "FELIX_PROMETHEUSMETRICSPORT": str(self.metrics_port),
            "FELIX_NFTABLESREFRESHINTERVAL": "2",
            "FELIX_IPTABLESREFRESHINTERVAL": "2",
            "FELIX_ROUTEREFRESHINTERVAL": "2",
            "FELIX_LOGFILEPATH": "none",
            "FELIX_LOGSEVERITYSCREEN": "Debug",
            # Other tests on this host make cali* interfaces of their own.
            "FELIX_UNKNOWNINTERFACEACTION": "Return",
            "FELIX_CONFIGFILE": os.path.join(workdir, "felix.cfg"),
            **(extra_env or {}),
        }
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> "FelixProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([FELIX], env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def http(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"Felix exited; log:\n{self.log_tail()}")
            if self.http(self.health_port, "/readiness")[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"Felix not ready after {timeout}s; log:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        status, body = self.http(self.metrics_port, "/metrics")
        out: dict[str, float] = {}
        if status != 200:
            return out
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def wait_revision(self, revision: int, timeout: float = 15.0) -> float:
        """Wait until Felix has programmed everything up to ``revision``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.metrics().get("felix_applied_datastore_revision", 0) >= revision:
                return time.monotonic() - start
            if not self.running():
                raise AssertionError(f"Felix exited; log:\n{self.log_tail()}")
            time.sleep(0.01)
        raise AssertionError(f"Felix did not reach revision {revision} in {timeout}s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


# -- pods -------------------------------------------------------------------------------------


@dataclass
class Pod:
    ns: str  # logical namespace ("x")
    name: str  # "a"
    namespace: str  # real namespace name ("x-1a2b3c4d")
    netns: Netns
    container_id: str
    ip: str = ""
    iface: str = ""
    wep: str = ""
    agent: Optional[subprocess.Popen[str]] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def label(self) -> str:
        return f"{self.ns}/{self.name}"

    def start_agent(self) -> None:
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.netns.name, sys.executable, "-u", AGENT,
             *(str(p) for p in (*PORTS, FLOOD_PORT))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.agent.stdout is not None
        line = self.agent.stdout.readline()
        if '"ready"' not in line:
            raise RuntimeError(f"agent in {self.label} did not start: {line!r}")

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.agent is not None and self.agent.stdin is not None
        self.agent.stdin.write(json.dumps(cmd) + "\n")
        self.agent.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.agent is not None and self.agent.stdout is not None
        line = self.agent.stdout.readline()
        if not line:
            raise RuntimeError(f"agent in {self.label} died")
        return json.loads(line)  # type: ignore[no-any-return]

    def cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.send(cmd)
            return self.receive()

    def stop_agent(self) -> None:
        if self.agent is not None:
            try:
                if self.agent.stdin:
                    self.agent.stdin.close()
            except OSError:
                pass
            self.agent.kill()
            self.agent.wait(5)
            self.agent = None


# -- matrix -------------------------------------------------------------------------------------

Expect = Callable[[Pod, Pod, str, int], bool]
Cell = tuple[str, str, str, int]  # (src label, dst label, proto, port)


@dataclass
class MatrixResult:
    expected: dict[Cell, bool]
    actual: dict[Cell, bool]
    errors: dict[Cell, str]
    pods: list[Pod]
    probes: tuple[Probe, ...]

    @property
    def wrong(self) -> list[Cell]:
        return [c for c in self.expected if self.expected[c] != self.actual.get(c)]

    def describe(self, title: str = "") -> str:
        by_label = {p.label: p for p in self.pods}
        lines = [f"reachability matrix {title}: '.' allowed, 'X' denied, '!' = differs from expected"]
        for proto, port in self.probes:
            lines.append(f"  {proto}/{port}" if proto != "icmp" else "  icmp")
            lines.append("      " + " ".join(f"{p.label:>4}" for p in self.pods))
            for src in self.pods:
                row = []
                for dst in self.pods:
                    cell = (src.label, dst.label, proto, port)
                    if cell not in self.expected:
                        row.append("   -")
                        continue
                    mark = "." if self.actual.get(cell) else "X"
                    if self.expected[cell] != self.actual.get(cell):
                        mark = "!" + mark
                    row.append(f"{mark:>4}")
                lines.append(f"  {src.label:>4} " + " ".join(row))
        for cell in self.wrong:
            src, dst = by_label[cell[0]], by_label[cell[1]]
            want = "ALLOW" if self.expected[cell] else "DENY"
            got = "ALLOW" if self.actual.get(cell) else "DENY"
            what = f"{cell[2]}/{cell[3]}" if cell[2] != "icmp" else "icmp echo"
            lines.append(
                f"FAILED probe {src.label} ({src.ip}, netns {src.netns.name}) -> {dst.label} "
                f"({dst.ip}) {what}: expected {want}, got {got}"
                + (f" ({self.errors.get(cell)})" if self.errors.get(cell) else "")
            )
        return "\n".join(lines)


class Cluster:
    """Nine pods in three namespaces on one node, plus a Felix."""

    def __init__(self, backend: Any, etcd_endpoint: str, cni_path: str,
                 namespaces: Iterable[str] = ("x", "y", "z"), pods: Iterable[str] = ("a", "b", "c")) -> None:
        self.backend = backend
        self.etcd_endpoint = etcd_endpoint
        self.cni_path = cni_path
        self.uid = uuid.uuid4().hex[:6]
        self.node = f"felix-node-{self.uid}"
        self.table = f"calico-t{self.uid}"
        self.workdir = tempfile.mkdtemp(prefix="pycalico-felix-")
        self.subnet = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        self.ns_names = {ns: f"{ns}-{self.uid}" for ns in namespaces}
        self.pods: list[Pod] = [
            Pod(ns, name, self.ns_names[ns], Netns("pcf"), f"felix-{self.uid}-{ns}-{name}")
            for ns in namespaces for name in pods
        ]
        self.felix = FelixProcess(etcd_endpoint, self.node, self.table, self.workdir)
        self.netconf = {
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "calico",
            "etcd_endpoints": etcd_endpoint,
            "nodename": self.node,
            "log_level": "info",
            "log_file_path": os.path.join(self.workdir, "cni.log"),
            "ipam": {"type": "host-local", "subnet": str(self.subnet),
                     "dataDir": os.path.join(self.workdir, "ipam")},
        }

    # -- lifecycle ------------------------------------------------------------------------------

    def pod(self, label: str) -> Pod:
        return next(p for p in self.pods if p.label == label)

    def ns(self, logical: str) -> str:
        return self.ns_names[logical]

    def setup(self) -> None:
        for ns, real in self.ns_names.items():
            self.put(namespace_profile(real, {"ns": ns, "kubernetes.io/metadata.name": real}))
        for p in self.pods:
            p.netns.__enter__()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(self._add_pod, self.pods))
        with ThreadPoolExecutor(max_workers=9) as pool:
            list(pool.map(lambda p: p.start_agent(), self.pods))
        self.felix.start()
        self.felix.wait_ready()

    def _add_pod(self, pod: Pod) -> None:
        res = exec_plugin(self.cni_path, "calico", "ADD", self.netconf, container_id=pod.container_id,
                          netns=pod.netns.path,
                          cni_args=f"K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name}")
        if not res.ok:
            raise RuntimeError(f"CNI ADD for {pod.label} failed: {res.stdout} {res.stderr}")
        result = res.json
        pod.ip = str(ipaddress.ip_interface(result["ips"][0]["address"]).ip)
        pod.iface = result["interfaces"][0]["name"]
        for kv in self.backend.list(ListOptions("WorkloadEndpoint", namespace=pod.namespace)).items:
            if kv.value["spec"].get("pod") == pod.name:
                pod.wep = kv.key.name
                value = kv.value
                value["metadata"].setdefault("labels", {})["pod"] = pod.name
                value["spec"]["ports"] = NAMED_PORTS  # as the Kubernetes datastore maps container ports
                self.backend.update(kv.key, value, kv.revision)
        assert pod.wep, f"no WorkloadEndpoint for {pod.label}"

    def teardown(self) -> None:
        """Stop Felix and the agents, delete the pods' namespaces (which takes
        their veths and routes with them) and our table. The WorkloadEndpoints
        and host-local allocations go with the etcd wipe and the work dir (a CNI
        DEL per pod would cost ~1.5 s each on this host)."""
        self.felix.stop()
        for p in self.pods:
            p.stop_agent()
        for p in self.pods:
            p.netns.delete()
        deadline = time.monotonic() + 10
        ifaces = {p.iface for p in self.pods if p.iface}
        while time.monotonic() < deadline and ifaces & _links():
            time.sleep(0.1)
        if nft_table_exists(self.table):
            nft("delete", "table", "inet", self.table, check=False)
        if self.felix.env.get("FELIX_NFTABLESMODE", "").lower() == "disabled":
            from felix.dataplane.iptables_dataplane import remove_iptables_state

            remove_iptables_state()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)


    def use_dataplane(self, mode: str, **env: str) -> None:
        """Restart Felix on another data plane: "nftables" (the default) or
        "iptables" (``FELIX_NFTABLESMODE=Disabled``; ``env`` adds e.g.
        ``FELIX_IPTABLESBACKEND``). The new Felix removes the old back end's rules."""
        want = {"FELIX_NFTABLESMODE": "Disabled" if mode == "iptables" else "Enabled", **env}
        if self.felix.running() and all(self.felix.env.get(k) == v for k, v in want.items()):
            return
        self.felix.stop()
        for key in [k for k in self.felix.env if k.startswith("FELIX_IPTABLES") and k not in want]:
            if key != "FELIX_IPTABLESREFRESHINTERVAL":
                del self.felix.env[key]
        self.felix.env.update(want)
        self.felix.start()
        self.felix.wait_ready()

    # -- datastore ---------------------------------------------------------------------------------

    def put(self, resource: dict[str, Any]) -> int:
        meta = resource["metadata"]
        key = ResourceKey(resource["kind"], meta["name"], meta.get("namespace"))
        return int(self.backend.apply(key, resource).revision)

    def delete(self, kind: str, name: str, namespace: Optional[str] = None) -> int:
        try:
            self.backend.delete(ResourceKey(kind, name, namespace))
        except NotFound:
            pass
        return int(self.backend.current_revision())

    def k8s_policy(self, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return network_policy({"metadata": {"name": name, "namespace": self.ns(ns)}, "spec": spec})

    def calico_policy(self, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": self.ns(ns)}, "spec": spec}

    def reset_policy(self) -> int:
        """Remove every policy-related resource and restore the namespace profiles."""
        for kind in POLICY_KINDS:
            for kv in self.backend.list(ListOptions(kind)).items:
                self.backend.delete(kv.key)
        for ns, real in self.ns_names.items():
            self.put(namespace_profile(real, {"ns": ns, "kubernetes.io/metadata.name": real}))
        return int(self.backend.current_revision())

    def apply_all(self, resources: Iterable[dict[str, Any]]) -> int:
        rev = 0
        for r in resources:
            rev = self.put(r)
        return rev

    def set_policies(self, resources: Iterable[dict[str, Any]]) -> float:
        """Replace the policy set and wait until Felix has programmed it."""
        rev = self.reset_policy()
        return self.sync(max(rev, self.apply_all(resources)))

    def sync(self, revision: Optional[int] = None) -> float:
        return self.felix.wait_revision(revision or int(self.backend.current_revision()))

    # -- probing -------------------------------------------------------------------------------------

    def probe_matrix(self, expect: Expect, probes: tuple[Probe, ...] = DEFAULT_PROBES,
                     timeout: float = 0.5) -> MatrixResult:
        expected: dict[Cell, bool] = {}
        plan: dict[str, list[tuple[Cell, list[Any]]]] = {}
        for src in self.pods:
            for dst in self.pods:
                if src is dst:
                    continue  # a pod reaches itself without leaving its namespace
                for proto, port in probes:
                    cell = (src.label, dst.label, proto, port)
                    expected[cell] = bool(expect(src, dst, proto, port))
                    plan.setdefault(src.label, []).append((cell, [dst.ip, proto, port]))
        actual, errors = self._run(plan, timeout)
        # Confirm mismatches with a patient second probe (a loaded 2-core host).
        retry = {
            label: [(c, t) for c, t in items if actual[c] != expected[c]]
            for label, items in plan.items()
        }
        retry = {k: v for k, v in retry.items() if v}
        if retry:
            again, again_err = self._run(retry, timeout * 3)
            actual.update(again)
            errors.update(again_err)
        return MatrixResult(expected, actual, errors, self.pods, probes)

    def _run(self, plan: dict[str, list[tuple[Cell, list[Any]]]],
             timeout: float) -> tuple[dict[Cell, bool], dict[Cell, str]]:
        pods = {p.label: p for p in self.pods}
        for label, items in plan.items():
            pods[label]._lock.acquire()
            pods[label].send({"cmd": "probe", "timeout": timeout, "targets": [t for _, t in items]})
        actual: dict[Cell, bool] = {}
        errors: dict[Cell, str] = {}
        try:
            for label, items in plan.items():
                reply = pods[label].receive()
                for (cell, _), ok, err in zip(items, reply["results"], reply["errors"]):
                    actual[cell] = ok
                    errors[cell] = err
        finally:
            for label in plan:
                pods[label]._lock.release()
        return actual, errors


class External:
    """A host outside the pod network: a namespace behind a veth from the host,
    with a probe agent (for natOutgoing and workload-to-host tests)."""

    def __init__(self, uid: str, port: int) -> None:
        self.netns = Netns("pcx")
        self.host_if = f"pcx{uid}"[:15]
        self.peer_if = f"pcy{uid}"[:15]
        third = random.randint(0, 255)
        self.host_ip = f"198.18.{third}.1"
        self.ip = f"198.18.{third}.2"
        self.port = port
        self.agent: Optional[subprocess.Popen[str]] = None

    def __enter__(self) -> "External":
        self.netns.__enter__()
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if,
            "netns", self.netns.name)
        run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        self.netns.run("ip", "addr", "add", f"{self.ip}/30", "dev", self.peer_if, check=True)
        self.netns.run("ip", "link", "set", self.peer_if, "up", check=True)
        self.netns.run("ip", "link", "set", "lo", "up", check=True)
        self.netns.run("ip", "route", "add", "default", "via", self.host_ip, check=True)
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.netns.name, sys.executable, "-u", AGENT, str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.agent.stdout is not None
        self.agent.stdout.readline()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait(5)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        self.netns.delete()


class HostAgent:
    """A probe agent in the host's own network namespace on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-u", AGENT, str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
