"""confd + BIRD on the Kubernetes datastore (DATASTORE_TYPE=kubernetes) against the
real kube-apiserver: two simulated nodes (tests/support/nodes.py) registered
as Kubernetes Nodes with Calico's BGP annotations, confd running with the
calico-confd ServiceAccount's token (RBAC from packaging/manifests/rbac), a
pod on each node from the CNI plugin + calico-ipam in KDD mode; the nodes
exchange their blocks over BGP and the pods reach each other.

The API server listens on the host's loopback (its certificate names
127.0.0.1); each node netns gets 127.0.0.1:<same port> forwarded to it, so the
node's processes use an unmodified kubeconfig."""
from __future__ import annotations

import ipaddress
import os
import socket
import threading
from typing import Any, Iterator

import pytest

from tests.kubernetes.fixtures import unique_name
from tests.support.nodes import Cluster, Forwarder, SimNode, listen_in_netns, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

POOL = "10.66.0.0/16"
CONFD_SA = ("kube-system", "calico-confd")

class IntoHost(Forwarder):
    """``127.0.0.1:<port>`` inside a node netns -> ``127.0.0.1:<port>`` in this
    process's netns (the reverse of :class:`Forwarder`, reusing its pump)."""

    def __init__(self, node_netns_path: str, port: int) -> None:  # noqa: D107 - no super().__init__
        self.netns_path = f"/proc/{os.getpid()}/ns/net"  # connections go back into our own netns
        self.address = ("127.0.0.1", port)
        self._listener = listen_in_netns(node_netns_path, ("127.0.0.1", port))
        self.port = port
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="into-host", daemon=True)
        self._thread.start()


class KddCluster(Cluster):
    """The simulated-node fabric without its etcd: the datastore is the
    kube-apiserver, reached from every node through an :class:`IntoHost`."""

    def __init__(self, kube: Any, backend: Any) -> None:
        super().__init__(prefix=f"pck{os.urandom(3).hex()}")
        self.kube = kube
        self._backend = backend
        self.api_port = int(kube.server.rsplit(":", 1)[1])
        self.into_host: list[IntoHost] = []
        token = kube.request_token(*CONFD_SA)
        self.confd_kubeconfig = kube.token_kubeconfig(token, os.path.join(self.workdir, "confd.kubeconfig"))

    def _start_etcd(self, timeout: float = 20) -> None:
        pass  # no etcd: the Kubernetes datastore

    def add_node(self, name: str | None = None, register: bool = True, **register_kw: Any) -> SimNode:
        node = super().add_node(name, register, **register_kw)
        self.into_host.append(IntoHost(f"/var/run/netns/{node.netns}", self.api_port))
        return node

    def start_kdd_confd(self, node: SimNode) -> None:
        node.start_confd({"DATASTORE_TYPE": "kubernetes", "ETCD_ENDPOINTS": "",
                          "KUBECONFIG": self.confd_kubeconfig})

    def kdd_netconf(self, node: SimNode) -> dict[str, Any]:
        conf = node.netconf()
        del conf["etcd_endpoints"]
        conf.update({"datastore_type": "kubernetes", "kubernetes": {"kubeconfig": self.kube.kubeconfig}})
        return conf

    def add_kdd_pod(self, node: SimNode, name: str) -> tuple[str, str]:
        """A Kubernetes Pod on ``node`` and its CNI ADD (in the node netns);
        returns (pod netns, pod IP)."""
        from tests.support.nodes import ip

        self.kube.create_pod("default", name, node.name)
        pod_ns = f"{node.netns}-{name}"
        ip("netns", "add", pod_ns)
        args = f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={name}"
        res = node.cni("ADD", self.kdd_netconf(node), name, f"/var/run/netns/{pod_ns}", cni_args=args)
        if not res.ok:
            ip("netns", "del", pod_ns, check=False)
            raise RuntimeError(f"CNI ADD of {name} on {node.name} failed: {res.stdout} {res.stderr}")
        from tests.support.nodes import Pod

        address = str(ipaddress.ip_interface(res.json["ips"][0]["address"]).ip)
        node.pods[name] = Pod(name, node, pod_ns, name, address, res.json, args, None)
        return pod_ns, address

    def close(self) -> None:
        names = list(self.nodes)
        super().close()
        for forwarder in self.into_host:
            forwarder.close()
        for name in names:
            self.kube.request("DELETE", f"/api/v1/nodes/{name}")


@pytest.fixture
def kdd_cluster(kube_apiserver, kube_backend) -> Iterator[KddCluster]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    cluster = KddCluster(kube_apiserver, kube_backend)
    with cluster:
        yield cluster


def test_two_nodes_exchange_routes_over_bgp_in_kdd_mode(kdd_cluster: KddCluster) -> None:
    cluster = kdd_cluster
    cluster.create_pool(POOL)
    n1, n2 = (cluster.add_node(unique_name(f"kdd-n{i}")) for i in (1, 2))
    # The Calico Nodes are Kubernetes Nodes carrying Calico's annotations.
    for node in (n1, n2):
        k8s = cluster.kube.must("GET", f"/api/v1/nodes/{node.name}")
        assert k8s["metadata"]["annotations"]["projectcalico.org/IPv4Address"] == str(node.interface)
        cluster.start_kdd_confd(node)
    pods = [cluster.add_kdd_pod(node, unique_name("bgp-pod")) for node in (n1, n2)]
    blocks = [cluster.node_blocks(node.name) for node in (n1, n2)]
    assert all(len(b) == 1 for b in blocks), blocks

    n1.wait_established({n2.ip})
    n2.wait_established({n1.ip})
    n1.wait_route(blocks[1][0], via=n2.ip)
    n2.wait_route(blocks[0][0], via=n1.ip)
    for node, own in ((n1, blocks[0][0]), (n2, blocks[1][0])):
        assert node.routes()[own].startswith("blackhole")  # its own block, as upstream
    assert {p.peer_type for p in n1.peers()} == {"node-to-node mesh"}

    (ns1, ip1), (ns2, ip2) = pods
    from tests.support.nodes import netns_exec

    for src, dst in ((ns1, ip2), (ns2, ip1)):
        ok = wait_for(lambda src=src, dst=dst: netns_exec(src, "ping", "-c", "1", "-W", "2", dst).returncode == 0,
                      20, what=f"ping {dst} from {src}")
        assert ok

    # A BGP configuration change in the API server reaches both BIRDs (AS number).
    cluster.apply_resource("BGPConfiguration", "default", {"asNumber": 64601})
    for node, other in ((n1, n2), (n2, n1)):
        from bird.control import bird_command

        name = f"Mesh_{other.ip.replace('.', '_')}"
        wait_for(lambda node=node, name=name: "64601" in bird_command(node.socket_path,
                                                                      f"show protocols all {name}").text,
                 30, what=f"{node.name}: mesh session in AS 64601")
    # The calico-confd role let confd read everything it watches.
    for node in (n1, n2):
        assert node.confd is not None
        log = node.confd.log().lower()
        assert "forbidden" not in log and "permission denied" not in log, node.confd.log()[-3000:]
