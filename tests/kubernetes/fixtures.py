"""Fixtures for the Kubernetes datastore: a real kube-apiserver per session,
backends against it, and a ``datastore`` abstraction that lets a suite run
against etcd and the Kubernetes API alike.

Loaded by tests/kubernetes/conftest.py; the root conftest can load it with
``pytest_plugins = ["tests.kubernetes.fixtures"]`` so the CNI and IPAM suites
can be parametrized over both datastores (see :class:`Datastore`).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.support import kube_apiserver as kas
from tests.support.kube_apiserver import KubeApiServer

DATASTORES = ["etcd", "kubernetes"]


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeApiServer]:
    """One real kube-apiserver (+ its own etcd) for the session, with the CRDs
    and RBAC manifests applied."""
    if not kas.available():
        pytest.skip(f"{kas.APISERVER_BINARY} missing: run scripts/build-kube-apiserver")
    with KubeApiServer() as server:
        server.install_crds()
        server.install_rbac()
        yield server


@pytest.fixture
def private_kube_apiserver_factory():  # type: ignore[no-untyped-def]
    """Start a kube-apiserver of the test's own (for tests that restart it)."""
    if not kas.available():
        pytest.skip(f"{kas.APISERVER_BINARY} missing: run scripts/build-kube-apiserver")
    started: list[KubeApiServer] = []

    def make(**kwargs: Any) -> KubeApiServer:
        server = KubeApiServer(**kwargs)
        started.append(server)
        server.start()
        server.install_crds()
        return server

    yield make
    for server in started:
        server.cleanup()


def wipe_calico(server: KubeApiServer) -> None:
    """Delete every Calico CR (cluster-scoped collections; namespaced ones in
    every namespace) and every pod: each test starts from an empty datastore,
    as with etcd."""
    from datastore.kubernetes.crd import ALL_CRDS

    reply = server.must("GET", "/api/v1/namespaces")
    namespaces = [n["metadata"]["name"] for n in reply.get("items") or []]
    for c in ALL_CRDS.values():
        if not c.namespaced:
            server.request("DELETE", c.path())
            continue
        for ns in namespaces:
            server.request("DELETE", c.path(namespace=ns))
    for ns in namespaces:
        server.request("DELETE", f"/api/v1/namespaces/{ns}/pods",
                       {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})


@pytest.fixture
def kube_backend(kube_apiserver: KubeApiServer):  # type: ignore[no-untyped-def]
    from datastore.kubernetes import KubernetesBackend

    wipe_calico(kube_apiserver)
    backend = KubernetesBackend(kubeconfig=kube_apiserver.kubeconfig)
    yield backend
    backend.close()
    wipe_calico(kube_apiserver)


@dataclass
class Datastore:
    """One datastore as a test sees it.

    ``netconf`` holds the CNI netconf fields that select it; ``prepare_pod``
    makes the Kubernetes Pod a k8s workload needs (a no-op on etcd);
    ``unreachable`` holds netconf fields pointing at nothing."""

    name: str
    backend: Any
    netconf: dict[str, Any]
    unreachable: dict[str, Any]
    kube: KubeApiServer | None = None
    _pods: set[tuple[str, str]] = field(default_factory=set)
    _namespaces: set[str] = field(default_factory=set)

    @property
    def is_kubernetes(self) -> bool:
        return self.kube is not None

    def prepare_pod(self, namespace: str, pod: str, node: str,
                    labels: dict[str, str] | None = None, service_account: str = "default") -> None:
        if self.kube is None:
            return
        if namespace not in ("default", "kube-system"):
            self._namespaces.add(namespace)
        self.kube.create_pod(namespace, pod, node, labels, service_account)
        self._pods.add((namespace, pod))

    def prepare_from_cni_args(self, cni_args: str, node: str) -> None:
        """Create the pod named by K8S_POD_NAMESPACE/K8S_POD_NAME, if any."""
        args = dict(kv.split("=", 1) for kv in cni_args.split(";") if "=" in kv)
        if args.get("K8S_POD_NAMESPACE") and args.get("K8S_POD_NAME"):
            self.prepare_pod(args["K8S_POD_NAMESPACE"], args["K8S_POD_NAME"], node)

    def cleanup(self) -> None:
        if self.kube is None:
            return
        for namespace, pod in self._pods:
            self.kube.delete_pod(namespace, pod)
        for namespace in self._namespaces:
            self.kube.delete_namespace(namespace)
        self._pods.clear()
        self._namespaces.clear()


def make_datastore(kind: str, request: pytest.FixtureRequest, tmp_dir: str) -> Datastore:
    if kind == "etcd":
        server = request.getfixturevalue("etcd_server")
        backend = request.getfixturevalue("etcd_backend")
        return Datastore("etcd", backend, {"datastore_type": "etcdv3", "etcd_endpoints": server.endpoint},
                         {"datastore_type": "etcdv3", "etcd_endpoints": "http://127.0.0.1:1"})
    kube = request.getfixturevalue("kube_apiserver")
    backend = request.getfixturevalue("kube_backend")
    bad = os.path.join(tmp_dir, "unreachable.kubeconfig")
    import json

    with open(bad, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                   "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1",
                                                          "insecure-skip-tls-verify": True}}],
                   "users": [{"name": "x", "user": {"token": "x"}}],
                   "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}, f)
    return Datastore("kubernetes", backend,
                     {"datastore_type": "kubernetes", "kubernetes": {"kubeconfig": kube.kubeconfig}},
                     {"datastore_type": "kubernetes", "kubernetes": {"kubeconfig": bad}}, kube)


@pytest.fixture(params=DATASTORES)
def datastore(request: pytest.FixtureRequest, tmp_path) -> Iterator[Datastore]:  # type: ignore[no-untyped-def]
    ds = make_datastore(request.param, request, str(tmp_path))
    try:
        yield ds
    finally:
        ds.cleanup()


@pytest.fixture
def backend(datastore: Datastore):  # type: ignore[no-untyped-def]
    return datastore.backend


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create_pod_workload(backend: Any, node: str, pod: str, nets: list[str], namespace: str = "default") -> None:
    """Kubernetes mode of an IPAM test's "the plugin wrote a WorkloadEndpoint":
    the pod kubelet would have created (named after the container), then the
    CNI plugin's annotation patch, through the backend's own (admin) API access."""
    from datastore.keys import ResourceKey
    from datastore.kubernetes import native

    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": namespace},
            "spec": {"nodeName": node, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "busybox"}]}}
    from datastore.kubernetes.transport import ApiError

    try:
        backend.api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body)
    except ApiError as exc:
        if exc.status != 409:
            raise
    name = native.wep_name(node, pod)
    backend.apply(ResourceKey("WorkloadEndpoint", name, namespace), {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"node": node, "pod": pod, "containerID": pod, "ipNetworks": nets},
    })


def delete_pod_workload(backend: Any, pod: str, namespace: str = "default") -> None:
    from datastore.kubernetes.transport import ApiError

    try:
        backend.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod}",
                            body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    except ApiError as exc:
        if exc.status != 404:
            raise
