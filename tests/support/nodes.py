"""Simulated Calico nodes: network namespaces on a shared bridge.

Layout (nothing touches the host's own interfaces or sysctls)::

    fabric netns  ── bridge br0 (172.31.0.254/24), etcd listening on it
       │ veth            │ veth
    node netns n1       node netns n2   ...   (172.31.0.1, .2, ... on eth0)
      ├ calico-confd + BIRD                  ip_forward=1 inside each node netns
      └ pods: CNI plugin exec'd inside the node netns, so the node netns is
        the pods' "host" (cali* veths, /32 routes, proxy ARP live there)

The test process reaches etcd through a small TCP forwarder (127.0.0.1:<port>
in the caller's netns → the fabric netns), so it can write resources while
every node talks to etcd over the bridge.

Use::

    with Cluster() as cluster:
        n1, n2 = cluster.add_node("node-1"), cluster.add_node("node-2")
        cluster.create_pool("10.65.0.0/16")
        n1.start_confd(); n2.start_confd()
        pod = n1.add_pod("pod-a")          # calico CNI + calico-ipam
        n2.wait_route(pod_block)           # BGP-learned route in node-2's kernel

Everything (processes, pods, namespaces) is removed by :meth:`Cluster.close`,
also at interpreter exit.
"""
from __future__ import annotations

import atexit
import ctypes
import ipaddress
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from tests.support.cni_exec import VENV_BIN, PluginResult, make_cni_path

ETCD_BINARY = os.environ.get("PYCALICO_ETCD", shutil.which("etcd") or "/usr/bin/etcd")
BIRD_BINARY = shutil.which("bird") or "/usr/sbin/bird"
DEFAULT_SUBNET = "172.31.0.0/24"
CLONE_NEWNET = 0x40000000

# BGP timers short enough for tests (seconds); confd reads these variables.
FAST_BGP_ENV = {
    "CALICO_BGP_CONNECT_DELAY_TIME": "1",
    "CALICO_BGP_CONNECT_RETRY_TIME": "1",
    "CALICO_BGP_ERROR_WAIT_TIME": "1,3",
    "CALICO_BGP_HOLD_TIME": "6",
    "CALICO_BGP_KEEPALIVE_TIME": "2",
    "CALICO_BIRD_SCAN_TIME": "1",
    "CALICO_BIRD_GRACEFUL_RESTART_WAIT": "3",
}

_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def netns_exec(netns: str, *cmd: str, check: bool = False, timeout: float = 60,
               env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True,
                          timeout=timeout, env=env, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"[{netns}] {' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- a TCP forwarder into a netns ---------------------------------------------------


def in_netns(netns_path: str, make: Callable[[], Any]) -> Any:
    """Call ``make`` in a thread that switched its own netns to ``netns_path``:
    sockets it creates stay bound to that netns."""
    result: dict[str, Any] = {}

    def worker() -> None:
        fd = os.open(netns_path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
            result["value"] = make()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def connect_in_netns(netns_path: str, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP connection opened from inside another netns."""
    sock: socket.socket = in_netns(netns_path, lambda: socket.create_connection(address, timeout))
    sock.settimeout(None)
    return sock


def listen_in_netns(netns_path: str, address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket (SO_REUSEADDR, backlog 64) inside another netns."""
    return in_netns(netns_path, lambda: socket.create_server(address, backlog=64))  # type: ignore[no-any-return]


class Forwarder:
    """127.0.0.1:<port> here → ``address`` inside ``netns_path``."""

    def __init__(self, netns_path: str, address: tuple[str, int]) -> None:
        self.netns_path = netns_path
        self.address = address
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="netns-forwarder", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        try:
            upstream = connect_in_netns(self.netns_path, self.address)
        except OSError:
            client.close()
            return
        self._conns.update((client, upstream))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            for s in (client, upstream):
                self._conns.discard(s)
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for s in list(self._conns):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# -- processes inside a netns ----------------------------------------------------------


class NetnsProcess:
    """A process started with ``ip netns exec`` (which execs: same pid)."""

    def __init__(self, netns: str, args: list[str], log_path: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *args], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


# -- pods and nodes ---------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    node: "SimNode"
    netns: str
    container_id: str
    ip: str
    result: dict[str, Any]
    cni_args: str = ""
    ipam: dict[str, Any] | None = None

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return netns_exec(self.netns, *cmd, timeout=timeout)

    def ping(self, address: str, count: int = 1, wait: float = 2) -> bool:
        return self.run("ping", "-c", str(count), "-W", str(wait), address).returncode == 0


class SimNode:
    """One simulated node: a netns on the fabric bridge."""

    def __init__(self, cluster: "Cluster", name: str, address: ipaddress.IPv4Interface) -> None:
        self.cluster = cluster
        self.name = name
        self.netns = f"{cluster.prefix}-{name}"
        self.interface = address
        self.ip = str(address.ip)
        # With a dual-stack fabric: the same host number in the IPv6 subnet.
        self.interface6 = cluster.ipv6_interface(address)
        self.ip6 = str(self.interface6.ip) if self.interface6 else None
        self.workdir = os.path.join(cluster.workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.config_path = os.path.join(self.workdir, "bird.cfg")
        self.socket_path = os.path.join(self.workdir, "bird.ctl")
        self.confd: NetnsProcess | None = None
        self.pods: dict[str, Pod] = {}

    # -- plumbing
    def _create(self, index: int) -> None:
        ip("netns", "add", self.netns)
        uplink = f"{self.cluster.prefix_short}v{index}"
        ip("link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", self.netns,
           netns=self.cluster.fabric)
        ip("link", "set", uplink, "master", "br0", "up", netns=self.cluster.fabric)
        ip("link", "set", "lo", "up", netns=self.netns)
        ip("addr", "add", str(self.interface), "dev", "eth0", netns=self.netns)
        if self.interface6:
            ip("addr", "add", str(self.interface6), "dev", "eth0", "nodad", netns=self.netns)
        ip("link", "set", "eth0", "up", netns=self.netns)
        # A default route, as real hosts have: proxy ARP for the pods' gateway
        # (169.254.1.1) only answers for addresses routed out another interface.
        ip("route", "add", "default", "via", self.cluster.fabric_ip, "dev", "eth0", netns=self.netns)
        if self.cluster.fabric_ip6:
            ip("-6", "route", "add", "default", "via", self.cluster.fabric_ip6, "dev", "eth0", netns=self.netns)
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"),
                           ("net.ipv4.conf.all.rp_filter", "0")):
            netns_exec(self.netns, "sysctl", "-qw", f"{key}={value}", check=True)

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return netns_exec(self.netns, *cmd, timeout=timeout)

    # -- datastore
    def register(self, asn: int | None = None, rr_cluster_id: str | None = None,
                 labels: dict[str, str] | None = None, ipv6: str | None = None) -> None:
        """Create or replace this node's Node resource (with its IPv6 address
        too on a dual-stack fabric)."""
        ipv6 = ipv6 or (str(self.interface6) if self.interface6 else None)
        from datastore.keys import ResourceKey

        bgp: dict[str, Any] = {"ipv4Address": str(self.interface)}
        if ipv6:
            bgp["ipv6Address"] = ipv6
        if asn is not None:
            bgp["asNumber"] = asn
        if rr_cluster_id:
            bgp["routeReflectorClusterID"] = rr_cluster_id
        self.cluster.backend.apply(ResourceKey("Node", self.name), {
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels or {}},
            "spec": {"bgp": bgp},
        })

    def unregister(self) -> None:
        from datastore.errors import NotFound
        from datastore.keys import ResourceKey

        try:
            self.cluster.backend.delete(ResourceKey("Node", self.name))
        except NotFound:
            pass

    # -- confd + BIRD
    def start_confd(self, extra_env: dict[str, str] | None = None) -> NetnsProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "NODENAME": self.name,
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": self.cluster.etcd_endpoint,
            "CALICO_BIRD_CONFIG": self.config_path,
            "CALICO_BIRD_SOCKET": self.socket_path,
            "CALICO_BIRD_LOG": os.path.join(self.workdir, "bird.log"),
            "CALICO_BIRD_BINARY": BIRD_BINARY,
            **self.cluster.bgp_env,
            **(extra_env or {}),
        }
        self.confd = NetnsProcess(self.netns, [os.path.join(VENV_BIN, "calico-confd")],
                                  os.path.join(self.workdir, "confd.log"), env)
        return self.confd

    def stop_confd(self) -> None:
        if self.confd is not None:
            self.confd.stop()
            self.confd = None

    def bird_pid(self) -> int | None:
        pids = [p for p in netns_pids(self.netns) if _comm(p) == "bird"]
        return pids[0] if pids else None

    def peers(self) -> list[Any]:
        from bird.status import peers

        return peers(self.socket_path)

    def established(self) -> set[str]:
        from bird.control import BirdError

        try:
            return {p.address for p in self.peers() if p.established}
        except BirdError:
            return set()

    def wait_established(self, addresses: set[str], timeout: float = 30) -> None:
        wait_for(lambda: addresses <= self.established(), timeout,
                 what=f"{self.name}: BGP sessions to {sorted(addresses)} established "
                      f"(now {sorted(self.established())})")

    def routes(self, proto: str | None = "bird", family: int = 4) -> dict[str, str]:
        """Kernel routes in this node: destination (always with a prefix
        length) → the rest of the line."""
        args = [f"-{family}", "route", "show"] + (["proto", proto] if proto else [])
        out = ip(*args, netns=self.netns).stdout
        table = {}
        for line in out.splitlines():
            parts = line.split(None, 1)
            if not parts:
                continue
            if parts[0] in ("blackhole", "unreachable", "prohibit"):
                words = line.split()
                dest, rest = words[1], " ".join([words[0], *words[2:]])
            else:
                dest, rest = parts[0], parts[1] if len(parts) > 1 else ""
            if dest != "default" and "/" not in dest:
                dest += "/128" if ":" in dest else "/32"  # ip prints host routes bare
            table[dest] = rest
        return table

    def wait_route(self, dest: str, present: bool = True, timeout: float = 30, via: str | None = None) -> None:
        family = 6 if ":" in dest else 4

        def ok() -> bool:
            line = self.routes(family=family).get(dest)
            if not present:
                return line is None
            return line is not None and (via is None or f"via {via}" in line)

        wait_for(ok, timeout, what=f"{self.name}: route {dest} {'present' if present else 'gone'}"
                                   f"{f' via {via}' if via else ''}")

    # -- pods
    def cni(self, command: str, conf: dict[str, Any], container_id: str, netns_path: str,
            ifname: str = "eth0", cni_args: str = "") -> PluginResult:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname, "CNI_ARGS": cni_args, "CNI_PATH": self.cluster.cni_path,
        }
        proc = netns_exec(self.netns, os.path.join(self.cluster.cni_path, "calico"), env=env,
                          input=json.dumps(conf), timeout=120)
        return PluginResult(proc.returncode, proc.stdout, proc.stderr)

    def netconf(self, ipam: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "calico",
            "etcd_endpoints": self.cluster.etcd_endpoint,
            "nodename": self.name,
            "log_level": "info",
            "log_file_path": os.path.join(self.workdir, "cni.log"),
            "ipam_lock_file": os.path.join(self.workdir, "ipam.lock"),
            "ipam": ipam or {"type": "calico-ipam"},
        }

    def add_pod(self, name: str, ipam: dict[str, Any] | None = None, namespace: str = "default") -> Pod:
        """Run the calico CNI plugin (ADD) for a new pod netns on this node.
        ``ipam`` defaults to calico-ipam; e.g. ``host_local_ipam(block)``."""
        pod_ns = f"{self.netns}-{name}"
        ip("netns", "add", pod_ns)
        cid = uuid.uuid4().hex
        args = f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}"
        res = self.cni("ADD", self.netconf(ipam), cid, f"/var/run/netns/{pod_ns}", cni_args=args)
        if not res.ok:
            ip("netns", "del", pod_ns, check=False)
            raise RuntimeError(f"CNI ADD of {name} on {self.name} failed: {res.stdout} {res.stderr}")
        result = res.json
        address = str(ipaddress.ip_interface(result["ips"][0]["address"]).ip)
        pod = Pod(name, self, pod_ns, cid, address, result, args, ipam)
        self.pods[name] = pod
        return pod

    def delete_pod(self, name: str) -> None:
        pod = self.pods.pop(name)
        self.cni("DEL", self.netconf(pod.ipam), pod.container_id, pod.netns_path, cni_args=pod.cni_args)
        ip("netns", "del", pod.netns, check=False)

    # -- teardown
    def destroy(self) -> None:
        """Stop everything in this node and remove its namespaces (not its
        datastore objects: see :meth:`unregister`)."""
        self.stop_confd()
        for pod in list(self.pods.values()):
            _kill_netns(pod.netns)
        self.pods.clear()
        _kill_netns(self.netns)


def _kill_netns(netns: str) -> None:
    """Kill what runs in ``netns`` (processes we started there) and delete it."""
    if not os.path.exists(f"/var/run/netns/{netns}"):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = netns_pids(netns)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and netns_pids(netns):
            time.sleep(0.05)
    ip("netns", "del", netns, check=False)


def host_local_ipam(subnet: str, data_dir: str) -> dict[str, Any]:
    return {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": data_dir}


class ExternalBird:
    """A plain BIRD in its own netns on the fabric: a top-of-rack router."""

    def __init__(self, cluster: "Cluster", name: str, address: ipaddress.IPv4Interface, asn: int) -> None:
        self.cluster = cluster
        self.name = name
        self.netns = f"{cluster.prefix}-{name}"
        self.interface = address
        self.ip = str(address.ip)
        self.asn = asn
        self.workdir = os.path.join(cluster.workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.config_path = os.path.join(self.workdir, "bird.cfg")
        self.socket_path = os.path.join(self.workdir, "bird.ctl")
        self.proc: NetnsProcess | None = None

    def render(self, neighbors: dict[str, int]) -> str:
        t = self.cluster.bgp_env
        lines = [
            "log stderr all;",
            f"router id {self.ip};",
            "protocol device { scan time 1; }",
            'protocol direct { ipv4; interface "*"; }',
            "protocol kernel { scan time 1; ipv4 { import none; export filter { "
            "if source = RTS_DEVICE then reject; accept; }; }; }",
            "template bgp calico {",
            f"  local as {self.asn};",
            f"  connect delay time {t.get('CALICO_BGP_CONNECT_DELAY_TIME', '2')};",
            f"  connect retry time {t.get('CALICO_BGP_CONNECT_RETRY_TIME', '5')};",
            f"  error wait time {t.get('CALICO_BGP_ERROR_WAIT_TIME', '5,30')};",
            "  ipv4 { import all; export none; };",
            "}",
        ]
        for peer_ip, asn in sorted(neighbors.items()):
            lines.append(f"protocol bgp node_{peer_ip.replace('.', '_')} from calico {{ "
                         f"neighbor {peer_ip} as {asn}; source address {self.ip}; }}")
        return "\n".join(lines) + "\n"

    def start(self, neighbors: dict[str, int]) -> None:
        ip("netns", "add", self.netns)
        uplink = f"{self.cluster.prefix_short}x{len(self.cluster.externals)}"
        ip("link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", self.netns,
           netns=self.cluster.fabric)
        ip("link", "set", uplink, "master", "br0", "up", netns=self.cluster.fabric)
        ip("link", "set", "lo", "up", netns=self.netns)
        ip("addr", "add", str(self.interface), "dev", "eth0", netns=self.netns)
        ip("link", "set", "eth0", "up", netns=self.netns)
        with open(self.config_path, "w") as f:
            f.write(self.render(neighbors))
        self.proc = NetnsProcess(self.netns, [BIRD_BINARY, "-f", "-s", self.socket_path, "-c", self.config_path],
                                 os.path.join(self.workdir, "bird.log"))

    def routes(self) -> dict[str, str]:
        out = ip("-4", "route", "show", "proto", "bird", netns=self.netns).stdout
        return {line.split()[0]: line for line in out.splitlines() if line.strip()}

    def destroy(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        _kill_netns(self.netns)


class Cluster:
    """A fabric (bridge + etcd) and the simulated nodes on it."""

    def __init__(self, subnet: str = DEFAULT_SUBNET, bgp_env: dict[str, str] | None = None,
                 prefix: str | None = None, cni_bin_dir: str | None = None,
                 subnet6: str | None = None) -> None:
        uid = uuid.uuid4().hex[:6]
        self.prefix = prefix or f"pcn{uid}"
        self.prefix_short = self.prefix[:10]
        self.fabric = f"{self.prefix}-fabric"
        self.subnet = ipaddress.ip_network(subnet)
        hosts = list(self.subnet.hosts())
        self._free_addresses = hosts[:-1]
        self.fabric_ip = str(hosts[-1])
        self.subnet6 = ipaddress.ip_network(subnet6) if subnet6 else None
        fabric6 = self.ipv6_interface(ipaddress.IPv4Interface(f"{self.fabric_ip}/{self.subnet.prefixlen}"))
        self.fabric_ip6 = str(fabric6.ip) if fabric6 else None
        self.bgp_env = dict(FAST_BGP_ENV if bgp_env is None else bgp_env)
        self.workdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.cni_path = make_cni_path(os.path.join(self.workdir, "cni-bin"), cni_bin_dir)
        self.etcd_endpoint = f"http://{self.fabric_ip}:2379"  # as the nodes see it
        self.local_endpoint = ""  # as this process sees it (forwarder)
        self.nodes: dict[str, SimNode] = {}
        self.externals: dict[str, ExternalBird] = {}
        self._etcd: NetnsProcess | None = None
        self._forwarder: Forwarder | None = None
        self._backend: Any = None
        self._closed = False

    # -- lifecycle
    def start(self) -> "Cluster":
        atexit.register(self.close)
        try:
            ip("netns", "add", self.fabric)
            ip("link", "set", "lo", "up", netns=self.fabric)
            ip("link", "add", "br0", "type", "bridge", netns=self.fabric)
            ip("addr", "add", f"{self.fabric_ip}/{self.subnet.prefixlen}", "dev", "br0", netns=self.fabric)
            if self.subnet6:
                ip("addr", "add", f"{self.fabric_ip6}/{self.subnet6.prefixlen}", "dev", "br0", "nodad",
                   netns=self.fabric)
            ip("link", "set", "br0", "up", netns=self.fabric)
            self._start_etcd()
        except BaseException:
            self.close()
            raise
        return self

    def _start_etcd(self, timeout: float = 20) -> None:
        data = os.path.join(self.workdir, "etcd")
        self._etcd = NetnsProcess(self.fabric, [
            ETCD_BINARY, "--name", "fabric", "--data-dir", data,
            "--listen-client-urls", self.etcd_endpoint, "--advertise-client-urls", self.etcd_endpoint,
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "fabric=http://127.0.0.1:2380", "--log-level", "warn",
        ], os.path.join(self.workdir, "etcd.log"))
        self._forwarder = Forwarder(f"/var/run/netns/{self.fabric}", (self.fabric_ip, 2379))
        self.local_endpoint = f"http://127.0.0.1:{self._forwarder.port}"

        def healthy() -> bool:
            if not self._etcd or not self._etcd.alive():
                raise RuntimeError(f"etcd exited: {self._etcd.log() if self._etcd else ''}")
            try:
                with urllib.request.urlopen(f"{self.local_endpoint}/health", timeout=1) as resp:
                    return b"true" in resp.read()
            except OSError:
                return False

        wait_for(healthy, timeout, 0.1, "etcd in the fabric netns")

    def kill_etcd(self) -> None:
        """kill -9 the fabric's etcd (its data dir stays; see :meth:`restart_etcd`)."""
        if self._etcd is not None and self._etcd.alive():
            self._etcd.proc.kill()
            self._etcd.proc.wait(10)

    def restart_etcd(self, timeout: float = 20) -> None:
        """Start etcd again on the same data dir and address; the test process keeps
        its forwarder (and so :attr:`local_endpoint` and :attr:`backend`)."""
        forwarder, endpoint = self._forwarder, self.local_endpoint
        self._start_etcd(timeout)
        if forwarder is not None and self._forwarder is not None:
            self._forwarder.close()
            self._forwarder, self.local_endpoint = forwarder, endpoint

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from datastore.etcd import EtcdBackend

            self._backend = EtcdBackend(self.local_endpoint)
        return self._backend

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in list(self.nodes.values()):
            node.destroy()
        for ext in list(self.externals.values()):
            ext.destroy()
        if self._backend is not None:
            try:
                self._backend.close()
            except Exception:  # noqa: BLE001
                pass
        if self._forwarder is not None:
            self._forwarder.close()
        if self._etcd is not None:
            self._etcd.stop()
        _kill_netns(self.fabric)
        if not os.environ.get("PYCALICO_KEEP_NODE_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- nodes
    def ipv6_interface(self, v4: ipaddress.IPv4Interface) -> ipaddress.IPv6Interface | None:
        if self.subnet6 is None:
            return None
        host = int(v4.ip) - int(v4.network.network_address)
        return ipaddress.IPv6Interface(f"{self.subnet6.network_address + host}/{self.subnet6.prefixlen}")

    def _next_address(self, last: bool = False) -> ipaddress.IPv4Interface:
        address = self._free_addresses.pop(-1 if last else 0)
        return ipaddress.IPv4Interface(f"{address}/{self.subnet.prefixlen}")

    def add_node(self, name: str | None = None, register: bool = True, **register_kw: Any) -> SimNode:
        name = name or f"node-{len(self.nodes) + 1}"
        node = SimNode(self, name, self._next_address())
        self.nodes[name] = node
        node._create(len(self.nodes))
        if register:
            node.register(**register_kw)
        return node

    def remove_node(self, name: str, unregister: bool = True) -> None:
        """Delete the Node resource (as ``calicoctl delete node`` would), then
        stop the node and remove its namespaces."""
        node = self.nodes.pop(name)
        if unregister:
            node.unregister()
        node.destroy()

    def add_external_bird(self, name: str, asn: int, neighbors: dict[str, int]) -> ExternalBird:
        ext = ExternalBird(self, name, self._next_address(last=True), asn)
        self.externals[name] = ext
        ext.start(neighbors)
        return ext

    # -- datastore helpers
    def create_pool(self, cidr: str, name: str = "default-ipv4-ippool", **spec: Any) -> None:
        from datastore.keys import ResourceKey

        self.backend.apply(ResourceKey("IPPool", name), {
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec},
        })

    def apply_resource(self, kind: str, name: str, spec: dict[str, Any],
                       labels: dict[str, str] | None = None) -> None:
        from datastore.keys import ResourceKey

        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = labels
        self.backend.apply(ResourceKey(kind, name), {
            "apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec,
        })

    def delete_resource(self, kind: str, name: str) -> None:
        from datastore.keys import ResourceKey

        self.backend.delete(ResourceKey(kind, name))

    def claim_block(self, node: str, cidr: str) -> None:
        """Write a confirmed BlockAffinity and its Block, as calico-ipam does
        when it claims a block for ``node``."""
        from datastore.errors import AlreadyExists
        from datastore.keys import BlockAffinityKey, BlockKey
        from datastore.models.ipam import AllocationBlock

        block = AllocationBlock.new(cidr, affinity=f"host:{node}")
        try:
            self.backend.create(BlockKey(cidr), block.to_dict())
        except AlreadyExists:
            pass
        self.backend.apply(BlockAffinityKey(node, cidr), {"state": "confirmed", "deleted": False})

    def release_block(self, node: str, cidr: str) -> None:
        from datastore.errors import NotFound
        from datastore.keys import BlockAffinityKey, BlockKey

        for key in (BlockAffinityKey(node, cidr), BlockKey(cidr)):
            try:
                self.backend.delete(key)
            except NotFound:
                pass

    def node_blocks(self, node: str) -> list[str]:
        from datastore.keys import ListOptions

        items = self.backend.list(ListOptions("BlockAffinity", host=node)).items
        return sorted(kv.key.cidr for kv in items if (kv.value or {}).get("state", "confirmed") == "confirmed")


def demo(out: Callable[[str], None] = print) -> bool:
    """Two simulated nodes, a pod on each (calico CNI + calico-ipam); the pods
    reach each other over routes BIRD learned by BGP. Returns success."""
    with Cluster() as cluster:
        cluster.create_pool("10.65.0.0/16")
        nodes = [cluster.add_node("node-1"), cluster.add_node("node-2")]
        for node in nodes:
            node.start_confd()
        pods = [node.add_pod(f"pod-{i}") for i, node in enumerate(nodes, 1)]
        for node, other in ((nodes[0], nodes[1]), (nodes[1], nodes[0])):
            node.wait_established({other.ip})
            for block in cluster.node_blocks(other.name):
                node.wait_route(block, via=other.ip)
        for node in nodes:
            out(f"{node.name} ({node.ip}) BGP routes:")
            for dest, rest in sorted(node.routes().items()):
                out(f"  {dest} {rest.strip()}")
        ok = True
        for a, b in ((pods[0], pods[1]), (pods[1], pods[0])):
            reached = a.ping(b.ip, count=2)
            ok &= reached
            out(f"{a.name}@{a.node.name} {a.ip} -> {b.name}@{b.node.name} {b.ip}: "
                f"{'reachable' if reached else 'UNREACHABLE'}")
        return ok


if __name__ == "__main__":
    import sys

    sys.exit(0 if demo() else 1)
