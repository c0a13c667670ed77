"""Kubeconfig handling and the two transports (stdlib HTTP, kubernetes client)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from datastore.errors import NotFound
from datastore.keys import ListOptions, ResourceKey
from datastore.kubernetes.kubeconfig import UnsupportedKubeconfig, find_auth, load_kubeconfig
from tests.support.cni_exec import REPO

pytestmark = pytest.mark.etcd


def _write(path, doc) -> str:  # type: ignore[no-untyped-def]
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(path)


def _config(cluster: dict, user: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": cluster}], "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}


def test_kubeconfig_forms(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    path = _write(tmp_path / "a", _config({"server": "https://10.0.0.1:6443/", "certificate-authority-data": ca},
                                          {"token": "abc"}))
    auth = load_kubeconfig(path)
    assert auth.server == "https://10.0.0.1:6443" and auth.bearer_token() == "abc"
    assert auth.ca_data and auth.ca_data.startswith("-----BEGIN") and not auth.ca_file  # no temp file
    key = base64.b64encode(b"KEY").decode()
    path_cert = _write(tmp_path / "d", _config({"server": "https://h:1"},
                                               {"client-certificate-data": key, "client-key-data": key}))
    auth = load_kubeconfig(path_cert)
    assert auth.cert_file and open(auth.cert_file, "rb").read() == b"KEY"
    auth.cleanup()
    assert not os.path.exists(auth.cert_file) and not os.path.exists(auth.key_file or "")
    (tmp_path / "tok").write_text("from-file\n")
    path = _write(tmp_path / "b", _config({"server": "https://h:1", "certificate-authority": "ca.crt"},
                                          {"tokenFile": "tok"}))
    auth = load_kubeconfig(path, api_endpoint="https://override:2")
    assert auth.server == "https://override:2" and auth.bearer_token() == "from-file"
    assert auth.ca_file == str(tmp_path / "ca.crt")  # relative to the kubeconfig
    path = _write(tmp_path / "c", _config({"server": "https://h:1"}, {"exec": {"command": "x"}}))
    with pytest.raises(UnsupportedKubeconfig):
        load_kubeconfig(path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="no kubeconfig"):
        find_auth(None, None)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "a"))
    assert find_auth(None, None).bearer_token() == "abc"


def test_cni_path_does_not_import_the_kubernetes_client(kube_apiserver) -> None:  # type: ignore[no-untyped-def]
    """The per-pod CNI processes connect with stdlib HTTP: the kubernetes
    package (0.5-1 s of imports) stays out."""
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from datastore.config import DatastoreConfig, connect\n"
        f"b = connect(DatastoreConfig(datastore_type='kubernetes', kubeconfig={kube_apiserver.kubeconfig!r}))\n"
        "from datastore.keys import ResourceKey\n"
        "from datastore.errors import NotFound\n"
        "try:\n    b.get(ResourceKey('ClusterInformation', 'default'))\nexcept NotFound:\n    pass\n"
        "print(int((time.perf_counter() - t) * 1000), sorted(m for m in sys.modules if m.split('.')[0] in "
        "('kubernetes', 'urllib3', 'requests', 'pydantic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    ms, modules = out.stdout.split(" ", 1)
    assert modules.strip() == "[]", modules
    print(f"\nconnect + one GET, cold process: {ms} ms")


def test_kubernetes_client_transport(kube_apiserver, kube_backend) -> None:  # type: ignore[no-untyped-def]
    """The same backend over the kubernetes Python client (used for exec /
    auth-provider kubeconfigs, or PYCALICO_K8S_TRANSPORT=kubernetes)."""
    from datastore.kubernetes import KubernetesBackend

    backend = KubernetesBackend(kubeconfig=kube_apiserver.kubeconfig, transport="kubernetes")
    try:
        key = ResourceKey("IPPool", "via-client")
        created = backend.create(key, {"metadata": {"name": "via-client"}, "spec": {"cidr": "10.30.0.0/16"}})
        assert kube_backend.get(key).revision == created.revision
        start = backend.list(ListOptions("IPPool")).revision
        watch = backend.watch(ListOptions("IPPool"), start)
        backend.delete(key, created.revision)
        event = next(iter(watch))
        watch.close()
        assert (event.type.value, event.key) == ("delete", key)
        with pytest.raises(NotFound):
            backend.get(key)
    finally:
        backend.close()
