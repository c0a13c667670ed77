"""The installer on the Kubernetes datastore, against a fresh real kube-apiserver
(no CRDs): it applies Calico's CRDs (and RBAC on request), waits until they
are established, writes nothing on a rerun, refuses clearly when the API
server does, and the CNI plugin it installed then networks a pod."""
from __future__ import annotations

import ipaddress
import json
import os
from typing import Iterator

import pytest

from tests.packaging.conftest import PACKAGING, run_frozen_install
from tests.support import kube_apiserver as kas
from tests.support.cni_exec import REFERENCE_PLUGINS, exec_plugin
from tests.support.kube_apiserver import KubeApiServer
from tests.support.netns import Netns

from calico_install.config import load  # noqa: E402  (on sys.path via conftest)
from calico_install.errors import InstallError  # noqa: E402
from calico_install.main import install_once  # noqa: E402
from calico_install.manifests import HASH_ANNOTATION  # noqa: E402

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

CRD_PREFIX = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
POOL = "10.127.0.0/16"
WRITES = ("create", "update", "patch", "delete")


@pytest.fixture
def fresh_apiserver() -> Iterator[KubeApiServer]:
    """A kube-apiserver of this test's own, without Calico's CRDs or RBAC."""
    if not kas.available():
        pytest.skip(f"{kas.APISERVER_BINARY} missing: run scripts/build-kube-apiserver")
    with KubeApiServer() as server:
        yield server


def calico_crds(server: KubeApiServer) -> dict[str, dict]:
    items = server.must("GET", CRD_PREFIX).get("items") or []
    return {c["metadata"]["name"]: c for c in items if c["spec"]["group"] == "crd.projectcalico.org"}


def established(crd: dict) -> bool:
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


def shipped_crd_names() -> set[str]:
    import yaml

    with open(os.path.join(PACKAGING, "manifests", "crds", "crds.yaml")) as f:
        return {d["metadata"]["name"] for d in yaml.safe_load_all(f) if d}


def test_installer_applies_crds_to_a_fresh_api_server_then_cni_adds_a_pod(bundle, fresh_apiserver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = fresh_apiserver
    assert calico_crds(server) == {}
    bin_dir, conf_dir = str(tmp_path / "bin"), str(tmp_path / "net.d")
    node = f"inst-node-{os.urandom(3).hex()}"
    args = ["--plugins-dir", REFERENCE_PLUGINS, "--nodename", node, "--log-level", "debug",
            "--log-file-path", str(tmp_path / "cni.log"),
            "--extra-config", json.dumps({"ipam_lock_file": str(tmp_path / "ipam.lock")})]

    # Credentials that may not create CRDs: one clear line, nothing applied, no conflist.
    server.must("POST", "/api/v1/namespaces/kube-system/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}})
    weak = server.token_kubeconfig(server.request_token("kube-system", "nobody"), str(tmp_path / "weak.kubeconfig"))
    refused = run_frozen_install(bundle, bin_dir, conf_dir, "--kubeconfig", weak, *args)
    assert refused.returncode == 1 and refused.stdout == ""
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("install: error: ") and "refused to read CustomResourceDefinition" in line, line
    assert "403" in line and "system:serviceaccount:kube-system:nobody" in line and "APPLY_CRDS=false" in line
    assert calico_crds(server) == {}
    assert not os.path.exists(os.path.join(conf_dir, "10-calico.conflist"))

    # The admin's kubeconfig: every CRD created and established, RBAC applied, then the conflist.
    offset = server.audit_offset()
    proc = run_frozen_install(bundle, bin_dir, conf_dir, "--kubeconfig", server.kubeconfig, "--apply-rbac", *args)
    assert proc.returncode == 0, proc.stderr
    crds = calico_crds(server)
    assert set(crds) == shipped_crd_names() and len(crds) == 22
    assert all(established(c) for c in crds.values()), [n for n, c in crds.items() if not established(c)]
    assert all(HASH_ANNOTATION in c["metadata"]["annotations"] for c in crds.values())
    server.must("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/calico-cni-plugin")
    server.must("GET", "/api/v1/namespaces/kube-system/serviceaccounts/calico-cni-plugin")
    first = server.audit_events(offset, "pycalico-admin")
    created = [e for e in first if e["verb"] == "create"]
    print(f"\nfirst install: {len(first)} API requests, {len(created)} objects created")

    # A rerun writes nothing (compares the manifest hash), and changes no file.
    offset = server.audit_offset()
    again = run_frozen_install(bundle, bin_dir, conf_dir, "--kubeconfig", server.kubeconfig, "--apply-rbac", *args)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stderr
    rerun = server.audit_events(offset, "pycalico-admin")
    assert [e for e in rerun if e["verb"] in WRITES] == []
    print(f"rerun: {len(rerun)} API requests, none of them a write")

    # A changed manifest (here: an edited CRD on the server) is put back.
    ippools = f"{CRD_PREFIX}/ippools.crd.projectcalico.org"
    crd = server.must("GET", ippools)
    crd["metadata"]["annotations"][HASH_ANNOTATION] = "stale"
    crd["spec"]["names"]["shortNames"] = ["oops"]
    server.must("PUT", ippools, crd)
    repaired = run_frozen_install(bundle, bin_dir, conf_dir, "--kubeconfig", server.kubeconfig, *args)
    assert repaired.returncode == 0, repaired.stderr
    crd = server.must("GET", ippools)
    assert "shortNames" not in crd["spec"]["names"] and crd["metadata"]["annotations"][HASH_ANNOTATION] != "stale"

    # The CNI plugin as installed (conflist + links) networks a pod.
    from datastore.kubernetes import KubernetesBackend
    from tests.support.pools import create_pool

    backend = KubernetesBackend(kubeconfig=server.kubeconfig)
    try:
        create_pool(backend, "installer-pool", POOL)
    finally:
        backend.close()
    server.create_pod("default", "web", node)
    conflist = json.load(open(os.path.join(conf_dir, "10-calico.conflist")))
    conf = {**conflist["plugins"][0], "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
    assert conf["datastore_type"] == "kubernetes"
    cni_args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=inst-cid"
    with Netns() as netns:
        add = exec_plugin(bin_dir, "calico", "ADD", conf, container_id="inst-cid", netns=netns.path,
                          cni_args=cni_args)
        assert add.ok, add.stdout + add.stderr
        ip = add.json["ips"][0]["address"]
        assert ipaddress.ip_interface(ip).ip in ipaddress.ip_network(POOL)
        pod = server.must("GET", "/api/v1/namespaces/default/pods/web")
        assert pod["metadata"]["annotations"]["cni.projectcalico.org/podIP"] == ip
        delete = exec_plugin(bin_dir, "calico", "DEL", conf, container_id="inst-cid", netns=netns.path,
                             cni_args=cni_args)
        assert delete.ok, delete.stdout + delete.stderr


def test_unreachable_api_server_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    source = tmp_path / "src"
    source.mkdir()
    argv = ["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d"), "--source-dir", str(source),
            "--nodename", "n", "--kubeconfig", str(kubeconfig)]
    with pytest.raises(InstallError, match=r"cannot reach the Kubernetes API server https://127.0.0.1:1 "
                                           r"to apply CustomResourceDefinition"):
        install_once(load(argv, {}))
    assert not os.path.exists(tmp_path / "net.d" / "10-calico.conflist")
    # Not asked for with etcd; refused when asked for with etcd.
    assert not load(argv[:-2] + ["--etcd-endpoints", "http://10.0.0.1:2379"], {}).apply_crds
    with pytest.raises(InstallError, match="needs the kubernetes datastore"):
        load(argv[:-2] + ["--etcd-endpoints", "http://10.0.0.1:2379", "--apply-crds"], {})


def test_missing_manifests_dir_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\n")
    argv = ["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d"), "--source-dir",
            str(tmp_path), "--nodename", "n", "--kubeconfig", str(kubeconfig),
            "--manifests-dir", str(tmp_path / "nowhere")]
    with pytest.raises(InstallError, match="cannot read manifest .*nowhere/crds/crds.yaml"):
        install_once(load(argv, {}))
