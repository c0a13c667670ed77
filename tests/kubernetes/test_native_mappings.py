"""Kubernetes objects seen as Calico resources, against a real kube-apiserver."""
from __future__ import annotations

import time

import pytest

from datastore.backend import EventType
from datastore.errors import Conflict, DatastoreError, NotFound
from datastore.keys import ListOptions, ResourceKey
from datastore.kubernetes import native
from datastore.kubernetes.errors import NotSupported
from tests.kubernetes.fixtures import unique_name

pytestmark = pytest.mark.etcd


@pytest.fixture
def ns(kube_apiserver):  # type: ignore[no-untyped-def]
    name = unique_name("kdd")
    kube_apiserver.ensure_namespace(name, {"team": "blue"})
    yield name
    kube_apiserver.delete_namespace(name)


def wep(node: str, pod: str, ns: str, ips: list[str], cid: str) -> dict:
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": native.wep_name(node, pod), "namespace": ns},
        "spec": {"node": node, "pod": pod, "orchestrator": "k8s", "endpoint": "eth0",
                 "containerID": cid, "ipNetworks": ips},
    }


def test_pod_is_a_workload_endpoint_and_cni_write_patches_annotations(kube_apiserver, kube_backend, ns) -> None:  # type: ignore[no-untyped-def]
    kube_apiserver.create_service_account(ns, "web-sa")
    kube_apiserver.create_pod(ns, "web-1", "node-1", {"app": "web"}, service_account="web-sa")
    key = ResourceKey("WorkloadEndpoint", "node--1-k8s-web--1-eth0", ns)
    kv = kube_backend.get(key)
    meta, spec = kv.value["metadata"], kv.value["spec"]
    assert meta["labels"] == {"app": "web", "projectcalico.org/namespace": ns,
                              "projectcalico.org/orchestrator": "k8s",
                              "projectcalico.org/serviceaccount": "web-sa"}
    assert spec["profiles"] == [f"kns.{ns}", f"ksa.{ns}.web-sa"]
    assert spec["ipNetworks"] == [] and spec["containerID"] == ""
    assert spec["ports"] == [{"name": "http", "protocol": "TCP", "port": 80}]
    assert spec["interfaceName"] == native.host_ifname(ns, "web-1")

    written = kube_backend.apply(key, wep("node-1", "web-1", ns, ["10.1.2.3/32", "fd00::3/128"], "cid-1"))
    assert written.value["spec"]["ipNetworks"] == ["10.1.2.3/32", "fd00::3/128"]
    pod = kube_apiserver.must("GET", f"/api/v1/namespaces/{ns}/pods/web-1")
    ann = pod["metadata"]["annotations"]
    assert ann["cni.projectcalico.org/podIP"] == "10.1.2.3/32"
    assert ann["cni.projectcalico.org/podIPs"] == "10.1.2.3/32,fd00::3/128"
    assert ann["cni.projectcalico.org/containerID"] == "cid-1"
    assert kube_backend.get(key).value["spec"]["containerID"] == "cid-1"

    # CAS on the pod's resourceVersion.
    with pytest.raises(Conflict):
        kube_backend.update(key, wep("node-1", "web-1", ns, ["10.1.2.4/32"], "cid-1"), kv.revision)
    with pytest.raises(Conflict):
        kube_backend.delete(key, kv.revision)
    # Delete blanks the IPs and keeps the container ID (upstream).
    kube_backend.delete(key, kube_backend.get(key).revision)
    after = kube_backend.get(key).value["spec"]
    assert after["ipNetworks"] == [] and after["containerID"] == "cid-1"

    listed = kube_backend.list(ListOptions("WorkloadEndpoint", namespace=ns))
    assert [i.key for i in listed.items] == [key]
    # The name must match the pod's node; a missing pod is NotFound.
    with pytest.raises(NotFound):
        kube_backend.get(ResourceKey("WorkloadEndpoint", "node--2-k8s-web--1-eth0", ns))
    with pytest.raises(NotFound):
        kube_backend.apply(ResourceKey("WorkloadEndpoint", "node--1-k8s-nope-eth0", ns),
                           wep("node-1", "nope", ns, ["10.1.2.5/32"], "c"))
    # Plain CNI workloads have no pod to live on.
    with pytest.raises(NotSupported, match="only pod endpoints"):
        kube_backend.apply(ResourceKey("WorkloadEndpoint", "node--1-cni-abc-eth0", "default"),
                           wep("node-1", "x", "default", [], "abc"))


def test_host_network_and_finished_pods(kube_apiserver, kube_backend, ns) -> None:  # type: ignore[no-untyped-def]
    kube_apiserver.create_pod(ns, "hostnet", "node-1", host_network=True)
    kube_apiserver.create_pod(ns, "done", "node-1")
    key = ResourceKey("WorkloadEndpoint", native.wep_name("node-1", "hostnet"), ns)
    with pytest.raises(NotFound):
        kube_backend.get(key)
    done_key = ResourceKey("WorkloadEndpoint", native.wep_name("node-1", "done"), ns)
    kube_backend.apply(done_key, wep("node-1", "done", ns, ["10.1.2.9/32"], "c9"))
    pod = kube_apiserver.must("GET", f"/api/v1/namespaces/{ns}/pods/done/status")
    pod["status"]["phase"] = "Succeeded"
    kube_apiserver.must("PUT", f"/api/v1/namespaces/{ns}/pods/done/status", pod)
    assert kube_backend.get(done_key).value["spec"]["ipNetworks"] == []
    assert [i.key.name for i in kube_backend.list(ListOptions("WorkloadEndpoint", namespace=ns)).items] == [
        done_key.name]


def test_namespaces_and_service_accounts_are_profiles(kube_apiserver, kube_backend, ns) -> None:  # type: ignore[no-untyped-def]
    kube_apiserver.create_service_account(ns, "builder")
    kns = kube_backend.get(ResourceKey("Profile", f"kns.{ns}")).value
    assert kns["spec"]["ingress"] == [{"action": "Allow"}] and kns["spec"]["egress"] == [{"action": "Allow"}]
    assert kns["spec"]["labelsToApply"] == {"pcns.team": "blue", "pcns.projectcalico.org/name": ns,
                                            "pcns.kubernetes.io/metadata.name": ns}
    ksa = kube_backend.get(ResourceKey("Profile", f"ksa.{ns}.builder")).value
    assert ksa["spec"] == {"labelsToApply": {"pcsa.projectcalico.org/name": "builder"}}
    names = {kv.key.name for kv in kube_backend.list(ListOptions("Profile")).items}
    assert {f"kns.{ns}", f"ksa.{ns}.builder", "kns.default", "projectcalico-default-allow"} <= names
    with pytest.raises(NotFound):
        kube_backend.get(ResourceKey("Profile", "kns.no-such-namespace"))
    with pytest.raises(NotSupported, match="read-only"):
        kube_backend.create(ResourceKey("Profile", "mine"), {"spec": {}})


def test_kubernetes_network_policy_is_a_calico_policy(kube_apiserver, kube_backend, ns) -> None:  # type: ignore[no-untyped-def]
    knp = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                         {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
            }],
        },
    }
    kube_apiserver.must("POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", knp)
    key = ResourceKey("NetworkPolicy", "knp.default.allow-web", ns)
    policy = kube_backend.get(key).value
    spec = policy["spec"]
    assert spec["tier"] == "default" and spec["order"] == 1000
    assert spec["selector"] == "projectcalico.org/orchestrator == 'k8s' && app == 'web'"
    assert spec["types"] == ["Ingress"]
    tcp = [r for r in spec["ingress"] if r["protocol"] == "TCP"]
    udp = [r for r in spec["ingress"] if r["protocol"] == "UDP"]
    assert len(tcp) == 2 and len(udp) == 2
    assert tcp[0]["source"]["selector"] == "projectcalico.org/orchestrator == 'k8s' && role == 'client'"
    assert tcp[0]["destination"]["ports"] == [80]
    assert tcp[1]["source"] == {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}
    listed = {kv.key.name for kv in kube_backend.list(ListOptions("NetworkPolicy", namespace=ns)).items}
    assert listed == {"knp.default.allow-web"}
    with pytest.raises(NotSupported):
        kube_backend.delete(key)
    kube_apiserver.must("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/allow-web")


def test_nodes_are_calico_nodes(kube_apiserver, kube_backend) -> None:  # type: ignore[no-untyped-def]
    name = unique_name("node")
    key = ResourceKey("Node", name)
    kube_backend.create(key, {"metadata": {"name": name, "labels": {"rack": "r1"}},
                              "spec": {"bgp": {"ipv4Address": "192.0.2.10/24", "asNumber": 64512}}})
    try:
        kv = kube_backend.get(key)
        assert kv.value["metadata"]["labels"] == {"rack": "r1"}
        assert kv.value["spec"]["bgp"] == {"ipv4Address": "192.0.2.10/24", "asNumber": "64512"}
        assert kv.value["spec"]["orchRefs"] == [{"nodeName": name, "orchestrator": "k8s"}]
        value = kv.value
        value["spec"]["bgp"] = {"ipv4Address": "192.0.2.11/24", "ipv4IPIPTunnelAddr": "10.244.0.1"}
        value["spec"]["ipv4VXLANTunnelAddr"] = "10.244.0.2"
        updated = kube_backend.update(key, value, kv.revision)
        with pytest.raises(Conflict):
            kube_backend.update(key, value, kv.revision)
        node = kube_apiserver.must("GET", f"/api/v1/nodes/{name}")
        ann = node["metadata"]["annotations"]
        assert ann["projectcalico.org/IPv4Address"] == "192.0.2.11/24"
        assert ann["projectcalico.org/IPv4IPIPTunnelAddr"] == "10.244.0.1"
        assert ann["projectcalico.org/IPv4VXLANTunnelAddr"] == "10.244.0.2"
        assert "projectcalico.org/ASNumber" not in ann
        assert updated.value["spec"]["ipv4VXLANTunnelAddr"] == "10.244.0.2"
        assert name in {kv.key.name for kv in kube_backend.list(ListOptions("Node")).items}
    finally:
        kube_backend.delete(key)
    with pytest.raises(NotFound):
        kube_backend.get(key)


def test_workload_endpoint_watch_follows_pods(kube_apiserver, kube_backend, ns) -> None:  # type: ignore[no-untyped-def]
    start = kube_backend.list(ListOptions("WorkloadEndpoint", namespace=ns)).revision
    watch = kube_backend.watch(ListOptions("WorkloadEndpoint", namespace=ns), start)
    kube_apiserver.create_pod(ns, "w1", "node-1")
    key = ResourceKey("WorkloadEndpoint", native.wep_name("node-1", "w1"), ns)
    kube_backend.apply(key, wep("node-1", "w1", ns, ["10.9.9.9/32"], "cw"))
    kube_apiserver.delete_pod(ns, "w1")
    seen = []
    for event in watch:
        ips = (event.value or {}).get("spec", {}).get("ipNetworks")
        seen.append((event.type, event.key.name, ips))
        if event.type == EventType.DELETE:
            break
    watch.close()
    assert seen[0] == (EventType.PUT, key.name, [])
    assert (EventType.PUT, key.name, ["10.9.9.9/32"]) in seen
    assert seen[-1][:2] == (EventType.DELETE, key.name)


def test_watch_resumes_across_server_timeouts_with_bookmarks(kube_apiserver, kube_backend) -> None:  # type: ignore[no-untyped-def]
    """The API server ends every watch after timeoutSeconds; the watch re-opens
    from the newest revision it saw, bookmarks included, without the consumer
    noticing. Bookmarks move that revision past events the watch filters out."""
    from datastore.kubernetes.mappings import Source
    from datastore.kubernetes.watch import KubeWatch

    options = ListOptions("IPPool")
    start = kube_backend.list(options).revision
    mapping = kube_backend._for_options(options)
    (src,) = mapping.sources(options)
    # A watch whose filter excludes what we write: only bookmarks can advance it.
    # The watch cache sends one 2 s before the watch's deadline.
    filtered = Source(src.path, {"labelSelector": "pycalico-test=never"}, src.convert, src.accept)
    quiet = KubeWatch(kube_backend.api, [filtered], start, timeout_seconds=5)
    # A plain watch that the server times out twice before its event arrives.
    watch = KubeWatch(kube_backend.api, [src], start, timeout_seconds=2)
    unseen = kube_backend.create(ResourceKey("IPPool", "unseen"),
                                 {"metadata": {"name": "unseen"}, "spec": {"cidr": "10.6.0.0/16"}})
    time.sleep(8)
    kube_backend.create(ResourceKey("IPPool", "late"), {"metadata": {"name": "late"}, "spec": {"cidr": "10.5.0.0/16"}})
    events = iter(watch)
    first, second = next(events), next(events)
    watch.close()
    quiet.close()
    assert [(e.type, e.key.name) for e in (first, second)] == [(EventType.PUT, "unseen"), (EventType.PUT, "late")]
    assert quiet.bookmarks >= 1 and int(quiet.revision) >= int(unseen.revision), (quiet.bookmarks, quiet.revision)
    print(f"bookmarks: {quiet.bookmarks}; filtered watch revision {start} -> {quiet.revision}")


def test_errors_are_typed_and_clear(kube_apiserver, kube_backend) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFound):
        kube_backend.get(ResourceKey("IPPool", "nope"))
    with pytest.raises(DatastoreError, match="rejected"):
        kube_backend.create(ResourceKey("IPPool", "Bad_Name"), {"metadata": {"name": "Bad_Name"}, "spec": {}})
