"""Fixtures for calicoctl tests: the real ``calicoctl`` executable run against
a real datastore.

``calicoctl`` is parametrized over etcd and a real kube-apiserver (the
session's, from tests/kubernetes/fixtures.py): each parameter yields a
:class:`Calicoctl` whose environment points the executable at that datastore,
plus a backend for direct checks.  ``calicoctl_etcd`` is the etcd one alone,
for tests whose subject does not depend on the datastore.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.support.cni_exec import REPO

CALICOCTL = os.environ.get("PYCALICO_CALICOCTL", os.path.join(REPO, ".venv", "bin", "calicoctl"))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DATASTORES = ["etcd", "kubernetes"]


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return (f"calicoctl {' '.join(self.args)} -> {self.returncode}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


@dataclass
class Calicoctl:
    """Runs the calicoctl executable with a datastore environment."""

    env: dict[str, str]
    backend: Any
    datastore: str
    kube: Any = None  # the KubeApiServer in kubernetes mode
    calls: list[Result] = field(default_factory=list)
    _namespaces: set[str] = field(default_factory=set)
    _nodes: set[str] = field(default_factory=set)

    @property
    def is_kubernetes(self) -> bool:
        return self.kube is not None

    def ensure_namespace(self, name: str) -> None:
        """Kubernetes mode: namespaced CRs need their Namespace (a no-op on etcd)."""
        if self.kube is not None and name not in ("default", "kube-system"):
            self.kube.ensure_namespace(name)
            self._namespaces.add(name)

    def ensure_node(self, name: str) -> None:
        """Kubernetes mode: the k8s Node kubelet would have registered."""
        if self.kube is not None:
            self.kube.must("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                                    "metadata": {"name": name}}, ok=(201, 409))
            self._nodes.add(name)

    def cleanup(self) -> None:
        if self.kube is None:
            return
        for name in self._nodes:
            self.kube.request("DELETE", f"/api/v1/nodes/{name}")
        for name in self._namespaces:
            self.kube.delete_namespace(name)

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60) -> Result:
        start = time.monotonic()
        proc = subprocess.run([CALICOCTL, *args], input=input, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)
        result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        self.calls.append(result)
        return result

    def ok(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = self(*args, input=input, env=env)
        assert result.ok, str(result)
        return result

    def fails(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = self(*args, input=input, env=env)
        assert result.returncode == 1, str(result)
        return result


def base_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/nonexistent"}
    for key in ("PYTHONDONTWRITEBYTECODE", "LANG", "LC_ALL"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _make(kind: str, request: pytest.FixtureRequest) -> Calicoctl:
    # The default config path must not exist or it would win over the environment.
    assert not os.path.exists("/etc/calico/calicoctl.cfg") or os.environ.get("PYCALICO_ALLOW_CFG")
    if kind == "etcd":
        server = request.getfixturevalue("etcd_server")
        backend = request.getfixturevalue("etcd_backend")  # wiped before and after
        env = {**base_env(), "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": server.endpoint}
        return Calicoctl(env, backend, "etcd")
    kube = request.getfixturevalue("kube_apiserver")
    backend = request.getfixturevalue("kube_backend")  # Calico CRs and pods wiped before and after
    env = {**base_env(), "DATASTORE_TYPE": "kubernetes", "KUBECONFIG": kube.kubeconfig}
    return Calicoctl(env, backend, "kubernetes", kube)


@pytest.fixture(params=DATASTORES)
def calicoctl(request: pytest.FixtureRequest) -> Iterator[Calicoctl]:
    ctl = _make(request.param, request)
    try:
        yield ctl
    finally:
        ctl.cleanup()


@pytest.fixture
def calicoctl_kdd(request: pytest.FixtureRequest) -> Iterator[Calicoctl]:
    ctl = _make("kubernetes", request)
    try:
        yield ctl
    finally:
        ctl.cleanup()


@pytest.fixture
def calicoctl_etcd(request: pytest.FixtureRequest) -> Iterator[Calicoctl]:
    yield _make("etcd", request)


def stored_keys(backend: Any) -> list[str]:
    """Every Calico key (etcd: under /calico/; kubernetes: every Calico CR, as
    plural/[namespace/]name), to prove a failed command wrote nothing."""
    if hasattr(backend, "_post"):
        import base64

        reply = backend._post("/kv/range", {"key": base64.b64encode(b"/calico/").decode(),
                                            "range_end": base64.b64encode(b"/calico0").decode(),
                                            "keys_only": True})
        return sorted(base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs") or [])
    from datastore.kubernetes.crd import ALL_CRDS

    keys = []
    for c in ALL_CRDS.values():
        for obj in backend.api.request("GET", c.path()).get("items") or []:
            meta = obj.get("metadata") or {}
            ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
            keys.append(f"{c.plural}/{ns}{meta.get('name')}")
    return sorted(keys)


_VOLATILE = [
    (re.compile(r'(uid|creationTimestamp|resourceVersion|clusterGUID)(": |: )"?[^",\n]+"?'), r"\1\2<X>"),
]


def normalise(text: str) -> str:
    """Mask per-run values (uids, timestamps, revisions, GUIDs) for golden comparison."""
    for rx, repl in _VOLATILE:
        text = rx.sub(repl, text)
    return text
