"""CNI GC (calico, then calico-ipam) in the Kubernetes datastore looks at its own
node only: pods on two nodes, GC of node A with the runtime knowing one of A's
two attachments. Proven from the API server's audit log (every request the
plugins' ServiceAccount made during the GC) and from node B's objects, which
must be untouched."""
from __future__ import annotations

import collections
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from datastore.keys import ListOptions
from tests.kubernetes.fixtures import unique_name
from tests.kubernetes.test_cni_kdd import CNI_SA, CNI_SA_NAMESPACE, k8s_args, netconf
from tests.support.cni_exec import exec_plugin
from tests.support.kube_apiserver import describe
from tests.support.netns import Netns
from tests.support.pools import create_pool

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

POOL = "10.125.0.0/16"
WRITES = ("create", "update", "patch", "delete", "deletecollection")


@pytest.fixture
def two_nodes(kube_apiserver, kube_backend, tmp_path):  # type: ignore[no-untyped-def]
    create_pool(kube_backend, "gc-pool", POOL)
    ns = unique_name("gc")
    kube_apiserver.ensure_namespace(ns)
    token = kube_apiserver.request_token(CNI_SA_NAMESPACE, CNI_SA)
    kubeconfig = kube_apiserver.token_kubeconfig(token, str(tmp_path / "cni.kubeconfig"))
    nodes = {"a": unique_name("node-a"), "b": unique_name("node-b")}
    confs = {k: {**netconf(kubeconfig, n, str(tmp_path)), "cniVersion": "1.1.0"} for k, n in nodes.items()}
    yield ns, nodes, confs
    kube_apiserver.delete_namespace(ns)


def _pod(kube, ns: str, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return kube.must("GET", f"/api/v1/namespaces/{ns}/pods/{name}")  # type: ignore[no-any-return]


def test_gc_of_node_a_never_looks_at_or_touches_node_b(kube_apiserver, kube_backend, two_nodes, cni_path) -> None:  # type: ignore[no-untyped-def]
    ns, nodes, confs = two_nodes
    pods = {"a": ["a-keep", "a-gone"], "b": ["b-one", "b-two"]}
    cids = {pod: f"{pod}-cid" for side in pods.values() for pod in side}
    user = f"system:serviceaccount:{CNI_SA_NAMESPACE}:{CNI_SA}"
    with Netns() as a_keep, Netns() as a_gone, Netns() as b_one, Netns() as b_two:
        netns = {"a-keep": a_keep, "a-gone": a_gone, "b-one": b_one, "b-two": b_two}
        for side, names in pods.items():
            for pod in names:
                kube_apiserver.create_pod(ns, pod, nodes[side])
                add = exec_plugin(cni_path, "calico", "ADD", confs[side], container_id=cids[pod],
                                  netns=netns[pod].path, cni_args=k8s_args(ns, pod))
                assert add.ok, add.stdout + add.stderr
        b_before = {pod: _pod(kube_apiserver, ns, pod) for pod in pods["b"]}
        handles_before = {kv.key.handle_id for kv in kube_backend.list(ListOptions("IPAMHandle")).items}
        assert handles_before == {f"k8s-pod-network.{cid}" for cid in cids.values()}

        # What the old GC saw (every pod of the cluster) vs what a node filter returns.
        every = kube_backend.list(ListOptions("WorkloadEndpoint", namespace=ns)).items
        mine = kube_backend.list(ListOptions("WorkloadEndpoint", namespace=ns, node=nodes["a"])).items
        assert {kv.value["spec"]["pod"] for kv in mine} == set(pods["a"])

        a_gone.delete()  # the runtime lost this sandbox without a DEL
        gc_conf = {**confs["a"], "cni.dev/valid-attachments": [{"containerID": cids["a-keep"], "ifname": "eth0"}]}
        offset = kube_apiserver.audit_offset()
        gc = exec_plugin(cni_path, "calico", "GC", gc_conf)
        assert gc.ok, gc.stdout + gc.stderr
        events = kube_apiserver.audit_events(offset, user)

        # Node A: the lost pod's endpoint and address are gone, the kept one is intact.
        gone = _pod(kube_apiserver, ns, "a-gone")["metadata"]["annotations"]
        assert gone["cni.projectcalico.org/podIP"] == "" and gone["cni.projectcalico.org/podIPs"] == ""
        kept = _pod(kube_apiserver, ns, "a-keep")["metadata"]["annotations"]
        assert kept["cni.projectcalico.org/podIP"]
        handles_after = {kv.key.handle_id for kv in kube_backend.list(ListOptions("IPAMHandle")).items}
        assert handles_after == handles_before - {f"k8s-pod-network.{cids['a-gone']}"}

        # Node B: not one of its pods read or written; its pods unchanged.
        pod_lists = [e for e in events if describe(e) == "list pods"]
        assert len(pod_lists) == 1, [describe(e) for e in events]
        query = parse_qs(urlsplit(pod_lists[0]["requestURI"]).query)
        assert query.get("fieldSelector") == [f"spec.nodeName={nodes['a']}"], pod_lists[0]["requestURI"]
        touched_pods = {(e.get("objectRef") or {}).get("name") for e in events
                        if (e.get("objectRef") or {}).get("resource") == "pods"}
        assert touched_pods <= {None, "a-gone"}, touched_pods
        for pod in pods["b"]:
            after = _pod(kube_apiserver, ns, pod)
            assert after["metadata"]["resourceVersion"] == b_before[pod]["metadata"]["resourceVersion"]
        # ... nor any of B's IPAM objects written (its affinity, its handles).
        b_names = {nodes["b"]} | {cids[p] for p in pods["b"]}
        for e in events:
            name = (e.get("objectRef") or {}).get("name") or ""
            if e.get("verb") in WRITES:
                assert not any(n in name for n in b_names), describe(e) + " " + name

        counts = collections.Counter(describe(e) for e in events)
        report = (f"\nAPI requests per CNI GC (calico + calico-ipam, node A, 1 of 2 pods lost): "
                  f"{len(events)} {dict(sorted(counts.items()))}"
                  f"\npods returned by the GC's pod list: before (all nodes) {len(every)}, "
                  f"after (spec.nodeName field selector) {len(mine)}")
        print(report)
        with open(os.path.join(os.environ.get("PYCALICO_REPORT_DIR", str(kube_apiserver.workdir)),
                               "kdd-gc-requests.txt"), "w") as f:
            f.write(report.strip() + "\n")

        for pod in ("a-keep", "b-one", "b-two"):
            side = pod[0]
            delete = exec_plugin(cni_path, "calico", "DEL", confs[side], container_id=cids[pod],
                                 netns=netns[pod].path, cni_args=k8s_args(ns, pod))
            assert delete.ok, delete.stdout + delete.stderr
    assert kube_backend.list(ListOptions("IPAMHandle")).items == []
