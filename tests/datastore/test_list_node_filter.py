"""``ListOptions.node``: one node's WorkloadEndpoints, on both datastores (etcd:
key range + the node segment of the name; kubernetes: a spec.nodeName field
selector), in lists and in watches."""
from __future__ import annotations

import pytest

from datastore.backend import EventType
from datastore.keys import ListOptions, ResourceKey, escape_wep_segment, wep_node
from tests.kubernetes.fixtures import create_pod_workload

pytestmark = pytest.mark.etcd

# Node names whose escaped forms prefix each other ("n-1" -> "n--1").
NODES = ("n", "n-1", "n-1-k8s")


def test_wep_node_parses_the_escaped_segment() -> None:
    assert wep_node("node--1-k8s-my--pod-eth0") == "node-1"
    assert wep_node("a---b-k8s-p-eth0") == "a-"
    assert wep_node("n-cni-cid-eth0") == "n"
    assert wep_node("nohyphen") is None
    for node in NODES:
        assert wep_node(escape_wep_segment(node) + "-k8s-p-eth0") == node


def test_node_is_for_workload_endpoints_only() -> None:
    with pytest.raises(ValueError):
        ListOptions("IPPool", node="n")
    with pytest.raises(ValueError):
        ListOptions("Block", node="n")


def _wep(datastore, node: str, pod: str, ns: str) -> None:  # type: ignore[no-untyped-def]
    ip = f"10.126.{NODES.index(node)}.{1 + int(pod[-1])}/32"
    if datastore.is_kubernetes:
        create_pod_workload(datastore.backend, node, pod, [ip], namespace=ns)
        datastore._pods.add((ns, pod))
        return
    name = f"{escape_wep_segment(node)}-k8s-{escape_wep_segment(pod)}-eth0"
    datastore.backend.create(ResourceKey("WorkloadEndpoint", name, ns), {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0", "ipNetworks": [ip]},
    })


def test_list_and_watch_one_nodes_endpoints(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    for node in NODES:
        for i in range(2):
            _wep(datastore, node, f"{node.replace('-', 'x')}-p{i}", "default")
    for node in NODES:
        for ns in (None, "default"):
            items = backend.list(ListOptions("WorkloadEndpoint", namespace=ns, node=node)).items
            assert sorted(kv.value["spec"]["node"] for kv in items) == [node, node], (node, ns)
            assert all(wep_node(kv.key.name) == node for kv in items)
    assert len(backend.list(ListOptions("WorkloadEndpoint")).items) == 2 * len(NODES)

    revision = backend.current_revision()
    watch = backend.watch(ListOptions("WorkloadEndpoint", node="n-1"), revision)
    try:
        _wep(datastore, "n", "n-p9", "default")  # another node: never seen
        _wep(datastore, "n-1", "nx1-p9", "default")
        seen = []
        for event in watch:
            if event.type == EventType.PUT:
                seen.append(event.key.name)
                if "p9" in event.key.name:
                    break
        assert seen and all(wep_node(name) == "n-1" for name in seen), seen
    finally:
        watch.close()
