"""Felix on the Kubernetes datastore (DATASTORE_TYPE=kubernetes) against the real
kube-apiserver, with the calico-felix ServiceAccount's token (RBAC from
packaging/manifests/rbac): pods networked by the CNI plugin in KDD mode, a
Kubernetes NetworkPolicy created as a native networking.k8s.io object, and
probe traffic between the pods' network namespaces.

Reuses the Felix harness's FelixProcess and Pod (probe agent)."""
from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from tests.felix.harness import FelixProcess, Pod, nft, nft_table_exists
from tests.support.cni_exec import exec_plugin
from tests.support.netns import Netns

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

FELIX_SA = ("kube-system", "calico-felix")
NP_PATH = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


class KddPods:
    """Three pods (app=a, b, c) in one namespace of a real API server, networked
    by the calico CNI plugin in KDD mode, each with a probe agent; one Felix."""

    def __init__(self, kube: Any, cni_path: str) -> None:
        self.kube = kube
        self.cni_path = cni_path
        self.uid = uuid.uuid4().hex[:6]
        self.node = f"felix-kdd-{self.uid}"
        self.namespace = f"fk-{self.uid}"
        self.table = f"calico-k{self.uid}"
        self.workdir = tempfile.mkdtemp(prefix="pycalico-felix-kdd-")
        subnet = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        self.pods = [Pod("k", name, self.namespace, Netns("pck"), f"fk-{self.uid}-{name}") for name in "abc"]
        self.netconf = {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
            "datastore_type": "kubernetes", "kubernetes": {"kubeconfig": kube.kubeconfig},
            "nodename": self.node, "log_level": "info", "log_file_path": os.path.join(self.workdir, "cni.log"),
            "ipam": {"type": "host-local", "subnet": str(subnet), "dataDir": os.path.join(self.workdir, "ipam")},
        }
        token = kube.request_token(*FELIX_SA)
        kubeconfig = kube.token_kubeconfig(token, os.path.join(self.workdir, "felix.kubeconfig"))
        self.felix = FelixProcess("", self.node, self.table, self.workdir,
                                  {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": kubeconfig})

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    def setup(self) -> None:
        self.kube.ensure_namespace(self.namespace, {"team": "kdd"})
        for p in self.pods:
            self.kube.create_pod(self.namespace, p.name, self.node, {"app": p.name})
            p.netns.__enter__()
            res = exec_plugin(self.cni_path, "calico", "ADD", self.netconf, container_id=p.container_id,
                              netns=p.netns.path, cni_args=f"K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={p.name}")
            if not res.ok:
                raise RuntimeError(f"CNI ADD for {p.name} failed: {res.stdout} {res.stderr}")
            p.ip = str(ipaddress.ip_interface(res.json["ips"][0]["address"]).ip)
            p.iface = res.json["interfaces"][0]["name"]
            p.start_agent()
        self.felix.start()
        self.felix.wait_ready(60)

    def teardown(self) -> None:
        self.felix.stop()
        for p in self.pods:
            p.stop_agent()
            p.netns.delete()
        self.kube.delete_namespace(self.namespace)
        if nft_table_exists(self.table):
            nft("delete", "table", "inet", self.table, check=False)
        subprocess.run(["rm", "-rf", self.workdir], check=False)

    def reach(self, src: str, dst: str, port: int = 80, timeout: float = 0.5) -> bool:
        reply = self.pod(src).cmd({"cmd": "probe", "timeout": timeout,
                                   "targets": [[self.pod(dst).ip, "tcp", port]]})
        return bool(reply["results"][0])

    def matrix(self, cells: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], bool]:
        return {c: self.reach(*c) for c in cells}


@pytest.fixture
def kdd_pods(kube_apiserver, kube_backend, cni_path) -> Iterator[KddPods]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    pods = KddPods(kube_apiserver, cni_path)
    try:
        pods.setup()
        yield pods
    finally:
        pods.teardown()


def wait_for(what: str, check: Callable[[], Any], want: Any, felix: FelixProcess, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = check()
        if got == want:
            return
        assert felix.running(), f"Felix exited; log:\n{felix.log_tail()}"
        time.sleep(0.5)
    raise AssertionError(f"{what}: expected {want}, got {got}; Felix log:\n{felix.log_tail()}")


CELLS = [("a", "b", 80), ("c", "b", 80), ("a", "b", 81), ("b", "a", 80), ("c", "a", 80)]


def test_kubernetes_network_policy_programs_felix(kdd_pods: KddPods) -> None:
    k = kdd_pods
    ns = k.namespace
    everything = {c: True for c in CELLS}
    wait_for("before any policy (namespace profile allows)", lambda: k.matrix(CELLS), everything, k.felix)

    # Only app=a may reach app=b, on TCP 80; nothing else selects a or c.
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "b-from-a", "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                              "ports": [{"protocol": "TCP", "port": 80}]}]},
    }
    k.kube.must("POST", NP_PATH.format(ns=ns), policy)
    want = {("a", "b", 80): True, ("c", "b", 80): False, ("a", "b", 81): False,
            ("b", "a", 80): True, ("c", "a", 80): True}
    wait_for("with NetworkPolicy b-from-a", lambda: k.matrix(CELLS), want, k.felix)

    # The policy's Calico form, read through the datastore as Felix reads it.
    from datastore.keys import ListOptions
    from datastore.kubernetes import KubernetesBackend

    backend = KubernetesBackend(kubeconfig=k.kube.kubeconfig)
    try:
        names = [kv.key.name for kv in backend.list(ListOptions("NetworkPolicy", namespace=ns)).items]
    finally:
        backend.close()
    assert names == ["knp.default.b-from-a"]

    # A label change on a pod (a native Pod update) moves it into the allowed set.
    k.kube.must("PATCH", f"/api/v1/namespaces/{ns}/pods/c", {"metadata": {"labels": {"app": "a"}}},
                content_type="application/merge-patch+json")
    wait_for("pod c relabelled app=a", lambda: k.reach("c", "b"), True, k.felix)

    k.kube.must("DELETE", f"{NP_PATH.format(ns=ns)}/b-from-a")
    wait_for("NetworkPolicy deleted", lambda: k.matrix(CELLS), everything, k.felix)
    # The calico-felix role let it read everything it watches.
    with open(k.felix.log_path, errors="replace") as f:
        log = f.read()
    assert "forbidden" not in log.lower() and "permission denied" not in log.lower(), k.felix.log_tail()
