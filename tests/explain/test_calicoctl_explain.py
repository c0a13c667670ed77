"""``calicoctl policy explain`` and the staged policy kinds, through the real
calicoctl executable against a real etcd."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from datastore.keys import ResourceKey
from tests.explain.support import FakeCluster
from tests.felix.test_policy_matrix import gnp
from tests.support.cni_exec import REPO

pytestmark = [pytest.mark.etcd]
CALICOCTL = os.path.join(REPO, ".venv", "bin", "calicoctl")


def _run(endpoint: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATASTORE_TYPE": "etcdv3",
           "ETCD_ENDPOINTS": endpoint}
    return subprocess.run([CALICOCTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def setup(etcd_backend: Any, etcd_server: Any) -> tuple[FakeCluster, str]:
    fake = FakeCluster()
    # A converted Kubernetes policy is written as the Kubernetes datastore would show it.
    knp = fake.k8s_policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    etcd_backend.apply(ResourceKey("NetworkPolicy", knp["metadata"]["name"], fake.ns("y")), knp)
    docs = fake.base_resources() + [
        fake.calico_policy("y", "allow-udp", {"order": 10, "selector": "pod == 'a'",
                                               "ingress": [{"action": "Log"},
                                                           {"action": "Allow", "protocol": "UDP"}]}),
        {"apiVersion": "projectcalico.org/v3", "kind": "StagedGlobalNetworkPolicy",
         "metadata": {"name": "no-z-to-x"},
         "spec": {"stagedAction": "Set", "order": 1, "selector": "pcns.ns == 'x'",
                  "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}}]}},
        {"apiVersion": "projectcalico.org/v3", "kind": "StagedKubernetesNetworkPolicy",
         "metadata": {"name": "staged-k8s", "namespace": fake.ns("z")},
         "spec": {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Ingress"]}},
    ]
    res = _run(etcd_server.endpoint, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert res.returncode == 0, res.stderr
    return fake, etcd_server.endpoint


def test_explain_table_and_json(setup: tuple[FakeCluster, str]) -> None:
    fake, ep = setup
    src, dst = fake.pod("x/a"), fake.pod("y/a")
    res = _run(ep, "policy", "explain", "--from", f"{src.namespace}/a", "--to", f"{dst.namespace}/a",
               "--port", "80", "--protocol", "TCP")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"Flow: {src.namespace}/a ({src.ip}) -> {dst.namespace}/a ({dst.ip}) TCP/80" in out
    assert "Verdict: DENY by ingress end of tier default: Deny" in out, out
    assert f"np/{dst.namespace}/allow-udp" in out and "logged by 0" in out
    assert "Staged policies: would deny" in out  # unchanged verdict, reported as such

    res = _run(ep, "policy", "explain", "--from", src.ip, "--to", f"{dst.namespace}/a", "--port", "81",
               "--protocol", "udp", "-o", "json")
    data = json.loads(res.stdout)
    assert data["verdict"] == "Allow"
    assert data["decidedBy"] == {**data["decidedBy"], "direction": "Ingress", "kind": "policy",
                                 "name": f"np/{dst.namespace}/allow-udp", "rule": 1, "result": "Allow"}
    assert data["egress"]["steps"][-1]["kind"] == "profile"


def test_staged_policies_stored_shown_and_explained(setup: tuple[FakeCluster, str]) -> None:
    fake, ep = setup
    res = _run(ep, "get", "sgnp", "-o", "wide")
    assert res.returncode == 0 and "no-z-to-x" in res.stdout and "Set" in res.stdout, res
    res = _run(ep, "get", "stagedkubernetesnetworkpolicy", "-n", fake.ns("z"), "-o", "yaml")
    assert "podSelector" in res.stdout and "staged-k8s" in res.stdout, res
    res = _run(ep, "policy", "explain", "--from", fake.pod("z/a").ip, "--to", fake.pod("x/b").ip, "--port", "80",
               "-o", "json")
    data = json.loads(res.stdout)
    assert data["verdict"] == "Allow"  # never enforced
    assert data["staged"]["summary"] == "would deny"
    assert data["staged"]["decidedBy"]["name"] == "gnp/no-z-to-x" and data["staged"]["decidedBy"]["staged"]
    # Staged Kubernetes policy: default deny into z/c would deny.
    res = _run(ep, "policy", "explain", "--from", f"{fake.ns('x')}/a", "--to", f"{fake.ns('z')}/c", "--port", "80")
    assert "Verdict: ALLOW" in res.stdout and "Staged policies: would deny" in res.stdout, res.stdout
    # Invalid stagedAction is rejected.
    bad = gnp("bad", {"stagedAction": "Maybe", "selector": "all()"})
    bad["kind"] = "StagedGlobalNetworkPolicy"
    res = _run(ep, "create", "-f", "-", stdin=yaml.safe_dump(bad))
    assert res.returncode == 1 and "stagedAction" in res.stderr, res


def test_unknown_pod_is_an_error(setup: tuple[FakeCluster, str]) -> None:
    _, ep = setup
    res = _run(ep, "policy", "explain", "--from", "nope/nothing", "--to", "10.0.0.1")
    assert res.returncode == 1 and "no workload endpoint for 'nope/nothing'" in res.stderr, res
