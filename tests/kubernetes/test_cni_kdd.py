"""The calico CNI plugin (real executables) on the Kubernetes datastore, with a
ServiceAccount token bound to the calico-cni-plugin ClusterRole from
packaging/manifests/rbac; and the API requests one ADD / DEL costs, counted
from the API server's audit log."""
from __future__ import annotations

import collections
import ipaddress
import os
from typing import Any

import pytest

from datastore.keys import ListOptions, ResourceKey
from datastore.kubernetes import native
from tests.kubernetes.fixtures import unique_name
from tests.support.cni_exec import exec_plugin
from tests.support.kube_apiserver import describe
from tests.support.netns import Netns, cali_links
from tests.support.pools import create_pool

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

POOL = "10.124.0.0/16"
CNI_SA_NAMESPACE = "kube-system"
CNI_SA = "calico-cni-plugin"


def k8s_args(ns: str, pod: str) -> str:
    return f"K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID="


@pytest.fixture
def kdd(kube_apiserver, kube_backend, tmp_path):  # type: ignore[no-untyped-def]
    """A pool, a test namespace and node name; cleans pods and the namespace."""
    create_pool(kube_backend, "kdd-pool", POOL)
    ns = unique_name("cni")
    kube_apiserver.ensure_namespace(ns)
    env = {"ns": ns, "node": unique_name("node"), "tmp": str(tmp_path)}
    yield env
    kube_apiserver.delete_namespace(ns)


def netconf(kubeconfig: str, node: str, tmp: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "datastore_type": "kubernetes",
        "kubernetes": {"kubeconfig": kubeconfig},
        "nodename": node,
        "log_level": "debug",
        "log_file_path": os.path.join(tmp, "cni.log"),
        "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
        "mtu": 1450,
        "ipam": {"type": "calico-ipam"},
    }


def token_conf(kube, kdd: dict[str, str], namespace: str, sa: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    token = kube.request_token(namespace, sa)
    path = kube.token_kubeconfig(token, os.path.join(kdd["tmp"], f"{sa}.kubeconfig"))
    return netconf(path, kdd["node"], kdd["tmp"])


def ipam_state(backend) -> dict[str, int]:  # type: ignore[no-untyped-def]
    allocated = 0
    for kv in backend.list(ListOptions("Block")).items:
        allocated += sum(1 for a in kv.value.get("allocations") or [] if a is not None)
    return {"allocated": allocated, "handles": len(backend.list(ListOptions("IPAMHandle")).items)}


def test_cni_plugin_with_its_role_networks_a_pod(kube_apiserver, kube_backend, kdd, cni_path) -> None:  # type: ignore[no-untyped-def]
    ns, node = kdd["ns"], kdd["node"]
    conf = token_conf(kube_apiserver, kdd, CNI_SA_NAMESPACE, CNI_SA)
    kube_apiserver.create_pod(ns, "web", node, {"app": "web"})
    with Netns() as netns:
        add = exec_plugin(cni_path, "calico", "ADD", conf, container_id="kdd-cid-1", netns=netns.path,
                          cni_args=k8s_args(ns, "web"))
        assert add.ok, add.stdout + add.stderr
        ip = add.json["ips"][0]["address"]
        assert ipaddress.ip_interface(ip).ip in ipaddress.ip_network(POOL)
        pod = kube_apiserver.must("GET", f"/api/v1/namespaces/{ns}/pods/web")
        ann = pod["metadata"]["annotations"]
        assert ann["cni.projectcalico.org/podIP"] == ip
        assert ann["cni.projectcalico.org/podIPs"] == ip
        assert ann["cni.projectcalico.org/containerID"] == "kdd-cid-1"
        key = ResourceKey("WorkloadEndpoint", native.wep_name(node, "web"), ns)
        wep = kube_backend.get(key).value
        assert wep["spec"]["ipNetworks"] == [ip] and wep["metadata"]["labels"]["app"] == "web"
        assert ipam_state(kube_backend) == {"allocated": 1, "handles": 1}
        assert netns.run("ip", "addr", "show", "eth0").stdout.count(ip.split("/")[0]) == 1

        delete = exec_plugin(cni_path, "calico", "DEL", conf, container_id="kdd-cid-1", netns=netns.path,
                             cni_args=k8s_args(ns, "web"))
        assert delete.ok, delete.stdout + delete.stderr
    ann = kube_apiserver.must("GET", f"/api/v1/namespaces/{ns}/pods/web")["metadata"]["annotations"]
    assert ann["cni.projectcalico.org/podIP"] == "" and ann["cni.projectcalico.org/podIPs"] == ""
    assert ipam_state(kube_backend) == {"allocated": 0, "handles": 0}


def test_token_without_the_role_gets_a_clear_error_and_leaves_nothing(kube_apiserver, kube_backend, kdd, cni_path) -> None:  # type: ignore[no-untyped-def]
    ns, node = kdd["ns"], kdd["node"]
    kube_apiserver.create_service_account(ns, "nobody")
    conf = token_conf(kube_apiserver, kdd, ns, "nobody")
    kube_apiserver.create_pod(ns, "web", node)
    with Netns() as netns:
        add = exec_plugin(cni_path, "calico", "ADD", conf, container_id="kdd-cid-2", netns=netns.path,
                          cni_args=k8s_args(ns, "web"))
        assert not add.ok
        err = add.json
        assert "permission denied" in err["msg"] + err.get("details", ""), err
        assert f"system:serviceaccount:{ns}:nobody" in err.get("details", "") + err["msg"], err
        assert "eth0" not in netns.run("ip", "link").stdout
    assert native.host_ifname(ns, "web") not in cali_links()  # the pod's host veth was never made
    pod = kube_apiserver.must("GET", f"/api/v1/namespaces/{ns}/pods/web")
    assert "cni.projectcalico.org/podIP" not in (pod["metadata"].get("annotations") or {})
    assert ipam_state(kube_backend) == {"allocated": 0, "handles": 0}
    assert kube_backend.list(ListOptions("BlockAffinity")).items == []
    print(f"\nADD without the role: {err}")


def _count(events: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(describe(e) for e in events)


def test_api_requests_per_add_and_del(kube_apiserver, kube_backend, kdd, cni_path) -> None:  # type: ignore[no-untyped-def]
    """Steady state (the node's block already claimed): count what one ADD and
    one DEL ask the API server, by the plugin's own ServiceAccount."""
    ns, node = kdd["ns"], kdd["node"]
    conf = token_conf(kube_apiserver, kdd, CNI_SA_NAMESPACE, CNI_SA)
    user = f"system:serviceaccount:{CNI_SA_NAMESPACE}:{CNI_SA}"
    for pod in ("warm", "p1"):
        kube_apiserver.create_pod(ns, pod, node)
    with Netns() as warm, Netns() as n1:
        assert exec_plugin(cni_path, "calico", "ADD", conf, container_id="warm-cid", netns=warm.path,
                           cni_args=k8s_args(ns, "warm")).ok  # claims the block
        offset = kube_apiserver.audit_offset()
        add = exec_plugin(cni_path, "calico", "ADD", conf, container_id="p1-cid", netns=n1.path,
                          cni_args=k8s_args(ns, "p1"))
        assert add.ok, add.stdout + add.stderr
        add_events = kube_apiserver.audit_events(offset, user)
        offset = kube_apiserver.audit_offset()
        assert exec_plugin(cni_path, "calico", "DEL", conf, container_id="p1-cid", netns=n1.path,
                           cni_args=k8s_args(ns, "p1")).ok
        del_events = kube_apiserver.audit_events(offset, user)
        assert exec_plugin(cni_path, "calico", "DEL", conf, container_id="warm-cid", netns=warm.path,
                           cni_args=k8s_args(ns, "warm")).ok
    add_count, del_count = _count(add_events), _count(del_events)
    report = (f"\nAPI requests per ADD: {len(add_events)} {dict(sorted(add_count.items()))}"
              f"\nAPI requests per DEL: {len(del_events)} {dict(sorted(del_count.items()))}")
    print(report)
    with open(os.path.join(os.environ.get("PYCALICO_REPORT_DIR", kdd["tmp"]), "kdd-api-requests.txt"), "w") as f:
        f.write(report.strip() + "\n")
    # Nothing on the ADD path lists pods or nodes.
    assert not any(k.startswith(("list pods", "list nodes", "watch ")) for k in add_count), add_count
    assert not any(k.startswith(("list pods", "list nodes", "watch ")) for k in del_count), del_count
    assert add_count["patch pods/status"] == 1 and del_count["patch pods/status"] == 1
    assert len(add_events) <= 12 and len(del_events) <= 10, report
