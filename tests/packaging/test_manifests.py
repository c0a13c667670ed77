"""A real kube-apiserver accepts the node DaemonSet and Typha manifests
(server-side dry run, strict field validation) once the CRDs and RBAC are in."""
from __future__ import annotations

import os
import urllib.parse
from typing import Any, Iterator

import pytest
import yaml

from tests.packaging.conftest import PACKAGING
from tests.support import kube_apiserver
from tests.support.kube_apiserver import KubeApiServer

pytestmark = pytest.mark.skipif(not kube_apiserver.available(),
                                reason="kube-apiserver not built (scripts/build-kube-apiserver)")

MANIFESTS = os.path.join(PACKAGING, "manifests")
FILES = ("calico-node.yaml", "calico-typha.yaml")
PLURALS = {
    "ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts", "Service": "services",
    "ClusterRoleBinding": "clusterrolebindings", "DaemonSet": "daemonsets", "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
}
CLUSTER_SCOPED = {"ClusterRoleBinding"}


def collection(doc: dict[str, Any]) -> str:
    api = doc["apiVersion"]
    base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
    plural = PLURALS[doc["kind"]]
    if doc["kind"] in CLUSTER_SCOPED:
        return f"{base}/{plural}"
    return f"{base}/namespaces/{doc['metadata']['namespace']}/{plural}"


def docs(name: str) -> list[dict[str, Any]]:
    with open(os.path.join(MANIFESTS, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def dry_run_create(api: KubeApiServer, doc: dict[str, Any]) -> tuple[int, Any]:
    query = urllib.parse.urlencode({"dryRun": "All", "fieldValidation": "Strict"})
    return api.request("POST", f"{collection(doc)}?{query}", doc)


@pytest.fixture(scope="module")
def apiserver() -> Iterator[KubeApiServer]:
    # Node agents are privileged pods: clusters that run them (kubeadm's
    # default included) allow privileged containers.
    with KubeApiServer(extra_args=["--allow-privileged=true"]) as api:
        api.install_crds()
        api.install_rbac()
        yield api


@pytest.mark.parametrize("name", FILES)
def test_server_side_dry_run_accepts_every_object(apiserver: KubeApiServer, name: str) -> None:
    objects = docs(name)
    assert objects
    for doc in objects:
        status, reply = dry_run_create(apiserver, doc)
        assert status in (200, 201), f"{name}: {doc['kind']}/{doc['metadata']['name']}: {status} {reply}"
        # A dry run persists nothing.
        gone, _ = apiserver.request("GET", f"{collection(doc)}/{doc['metadata']['name']}")
        assert gone == 404


def test_roles_bound_by_the_node_manifest_exist(apiserver: KubeApiServer) -> None:
    for doc in docs("calico-node.yaml"):
        if doc["kind"] == "ClusterRoleBinding":
            role = doc["roleRef"]["name"]
            status, _ = apiserver.request("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}")
            assert status == 200, f"{doc['metadata']['name']} binds missing ClusterRole {role}"
    typha = next(d for d in docs("calico-typha.yaml") if d["kind"] == "Deployment")
    sa = typha["spec"]["template"]["spec"]["serviceAccountName"]
    status, _ = apiserver.request("GET", f"/api/v1/namespaces/kube-system/serviceaccounts/{sa}")
    assert status == 200


def test_dry_run_is_not_vacuous(apiserver: KubeApiServer) -> None:
    """A typo'd field is rejected, so the acceptance above means something."""
    daemonset = next(d for d in docs("calico-node.yaml") if d["kind"] == "DaemonSet")
    broken = yaml.safe_load(yaml.safe_dump(daemonset))
    broken["spec"]["template"]["spec"]["containers"][0]["comand"] = ["typo"]
    status, reply = dry_run_create(apiserver, broken)
    assert status == 400 and "comand" in str(reply)
