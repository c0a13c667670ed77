"""Policy truth table: 3 namespaces x 3 pods, TCP and UDP on two ports, every
pod pair, real nftables programmed by a running Felix from a real etcd
(in the style of the Kubernetes NetworkPolicy e2e suite and Cyclonus).
Every scenario runs on both data planes (nftables, then iptables + ipset
with ``FELIX_NFTABLESMODE=Disabled``) with the same expected matrix.

Pods are labelled ``pod: a|b|c``; their namespaces ``ns: x|y|z`` (through the
``kns.<ns>`` profiles, so selectors see them as ``pcns.ns``). Each scenario
replaces the policy set, waits until Felix has programmed the datastore
revision, probes all 9 x 8 pairs x 4 probes concurrently and compares with
the expected matrix; a failing cell prints the probe that failed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from felix.dataplane.iptables import detect_backend
from tests.felix.harness import DEFAULT_PROBES, Cluster, Expect, Pod, Probe, cali_chains, nft_table_exists

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

Build = Callable[[Cluster], list[dict[str, Any]]]


@dataclass(frozen=True)
class Scenario:
    name: str
    build: Build
    expect: Expect
    probes: tuple[Probe, ...] = DEFAULT_PROBES

    def __str__(self) -> str:
        return self.name


def gnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def ns_sel(*names: str) -> dict[str, Any]:
    if len(names) == 1:
        return {"matchLabels": {"ns": names[0]}}
    return {"matchExpressions": [{"key": "ns", "operator": "In", "values": list(names)}]}


def pod_sel(name: str) -> dict[str, Any]:
    return {"matchLabels": {"pod": name}}


def is_(p: Pod, label: str) -> bool:
    return p.label == label


SCENARIOS = [
    Scenario("no policy: namespace profiles allow everything",
             lambda c: [], lambda s, d, proto, port: True),
    Scenario(
        "k8s default deny ingress in x",
        lambda c: [c.k8s_policy("x", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})],
        lambda s, d, proto, port: d.ns != "x",
    ),
    Scenario(
        "k8s default deny egress in x",
        lambda c: [c.k8s_policy("x", "deny-out", {"podSelector": {}, "policyTypes": ["Egress"]})],
        lambda s, d, proto, port: s.ns != "x",
    ),
    Scenario(
        "k8s allow x/a from pod b of its namespace (pod selector)",
        lambda c: [c.k8s_policy("x", "a-from-b", {"podSelector": pod_sel("a"),
                                                  "ingress": [{"from": [{"podSelector": pod_sel("b")}]}]})],
        lambda s, d, proto, port: not is_(d, "x/a") or is_(s, "x/b"),
    ),
    Scenario(
        "k8s allow x/a from namespace y (namespace selector)",
        lambda c: [c.k8s_policy("x", "a-from-y", {"podSelector": pod_sel("a"),
                                                  "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}]}]})],
        lambda s, d, proto, port: not is_(d, "x/a") or s.ns == "y",
    ),
    Scenario(
        "k8s allow x/a from pods c in namespaces y,z (both selectors in one peer)",
        lambda c: [c.k8s_policy("x", "a-from-yz-c", {
            "podSelector": pod_sel("a"),
            "ingress": [{"from": [{"namespaceSelector": ns_sel("y", "z"), "podSelector": pod_sel("c")}]}]})],
        lambda s, d, proto, port: not is_(d, "x/a") or s.label in ("y/c", "z/c"),
    ),
    Scenario(
        "k8s allow x/* from namespace y OR pod b (two peers)",
        lambda c: [c.k8s_policy("x", "from-y-or-b", {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": ns_sel("y")}, {"podSelector": pod_sel("b")}]}]})],
        lambda s, d, proto, port: d.ns != "x" or s.ns == "y" or is_(s, "x/b"),
    ),
    Scenario(
        "k8s ipBlock with except",
        lambda c: [c.k8s_policy("x", "ipblock", {
            "podSelector": pod_sel("a"),
            "ingress": [{"from": [{"ipBlock": {"cidr": str(c.subnet),
                                               "except": [f"{c.pod('y/b').ip}/32"]}}]}]})],
        lambda s, d, proto, port: not is_(d, "x/a") or not is_(s, "y/b"),
    ),
    Scenario(
        "k8s allow only TCP 80 into x",
        lambda c: [c.k8s_policy("x", "tcp80", {
            "podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]})],
        lambda s, d, proto, port: d.ns != "x" or (proto, port) == ("tcp", 80),
    ),
    Scenario(
        "k8s port ranges (endPort): UDP 79-80 and TCP 81-90 into x/a",
        lambda c: [c.k8s_policy("x", "ranges", {
            "podSelector": pod_sel("a"),
            "ingress": [{"ports": [{"protocol": "UDP", "port": 79, "endPort": 80},
                                   {"protocol": "TCP", "port": 81, "endPort": 90}]}]})],
        lambda s, d, proto, port: not is_(d, "x/a") or (proto, port) in (("udp", 80), ("tcp", 81)),
    ),
    Scenario(
        "k8s named ports: x admits TCP 'web' (80) and UDP 'alt' (81)",
        lambda c: [c.k8s_policy("x", "named", {
            "podSelector": {}, "ingress": [{"ports": [{"port": "web"}, {"protocol": "UDP", "port": "alt"}]}]})],
        lambda s, d, proto, port: d.ns != "x" or (proto, port) in (("tcp", 80), ("udp", 81)),
    ),
    Scenario(
        "k8s egress from x/a only to two CIDRs (y/b, z/c)",
        lambda c: [c.k8s_policy("x", "egress-cidr", {
            "podSelector": pod_sel("a"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": f"{c.pod('y/b').ip}/32"}},
                               {"ipBlock": {"cidr": f"{c.pod('z/c').ip}/32"}}]}]})],
        lambda s, d, proto, port: not is_(s, "x/a") or d.label in ("y/b", "z/c"),
    ),
    Scenario(
        "k8s egress from x only UDP to namespace y",
        lambda c: [c.k8s_policy("x", "egress-udp-y", {
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": ns_sel("y")}], "ports": [{"protocol": "UDP"}]}]})],
        lambda s, d, proto, port: s.ns != "x" or (d.ns == "y" and proto == "udp"),
    ),
    Scenario(
        "GlobalNetworkPolicy order 10 Passes namespace y past a k8s default deny in x",
        lambda c: [
            gnp("pass-y", {"order": 10, "selector": "pcns.ns == 'x'",
                           "ingress": [{"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}}]}),
            c.k8s_policy("x", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        ],
        lambda s, d, proto, port: d.ns != "x" or s.ns == "y",
    ),
    Scenario(
        "Deny (order 100) beats Allow (order 200)",
        lambda c: [
            c.calico_policy("x", "deny-z", {"order": 100, "selector": "all()",
                                            "ingress": [{"action": "Deny",
                                                         "source": {"namespaceSelector": "ns == 'z'"}}]}),
            c.calico_policy("x", "allow-all", {"order": 200, "selector": "all()",
                                               "ingress": [{"action": "Allow"}]}),
        ],
        lambda s, d, proto, port: d.ns != "x" or s.ns != "z",
    ),
    Scenario(
        "Allow (order 100) beats Deny (order 200)",
        lambda c: [
            c.calico_policy("x", "allow-z", {"order": 100, "selector": "all()",
                                             "ingress": [{"action": "Allow",
                                                          "source": {"namespaceSelector": "ns == 'z'"}}]}),
            c.calico_policy("x", "deny-all", {"order": 200, "selector": "all()",
                                              "ingress": [{"action": "Deny"}]}),
        ],
        lambda s, d, proto, port: d.ns != "x" or s.ns == "z",
    ),
    Scenario(
        "GlobalNetworkPolicy selecting a profile label (pcns.ns == 'y'): only pods a may enter",
        lambda c: [gnp("y-from-a", {"selector": "pcns.ns == 'y'",
                                    "ingress": [{"action": "Allow", "source": {"selector": "pod == 'a'"}}]})],
        lambda s, d, proto, port: d.ns != "y" or s.name == "a",
    ),
    Scenario(
        "notSelector and notPorts: z admits TCP except port 81 from its own pods other than a",
        lambda c: [c.calico_policy("z", "not-a-not-81", {
            "selector": "all()",
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"notSelector": "pod == 'a'"},
                         "destination": {"notPorts": [81]}}]})],
        # A notSelector alone still limits a namespaced policy's rule to its namespace (upstream).
        lambda s, d, proto, port: d.ns != "z" or (proto == "tcp" and port != 81 and s.ns == "z" and s.name != "a"),
    ),
    Scenario(
        "tiers: a security tier denies namespace z and passes the rest to the default tier",
        lambda c: [
            {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "security"},
             "spec": {"order": 100}},
            gnp("security.deny-z", {"tier": "security", "order": 1, "selector": "all()",
                                    "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}},
                                                {"action": "Pass"}]}),
            c.k8s_policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        ],
        lambda s, d, proto, port: s.ns != "z" and d.ns != "y",
    ),
    Scenario(
        "Log then Allow from namespace y (Log does not decide)",
        lambda c: [c.calico_policy("x", "log-then-allow", {
            "selector": "all()",
            "ingress": [{"action": "Log"},
                        {"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}}]})],
        lambda s, d, proto, port: d.ns != "x" or s.ns == "y",
    ),
    Scenario(
        "ICMP: x/a admits echo requests (type 8) only",
        lambda c: [c.calico_policy("x", "icmp-only", {
            "selector": "pod == 'a'",
            "ingress": [{"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}}]})],
        lambda s, d, proto, port: not is_(d, "x/a") or proto == "icmp",
        probes=(("tcp", 80), ("udp", 81), ("icmp", 0)),
    ),
    Scenario(
        "profiles decide when no policy applies: kns.z admits only its own namespace",
        lambda c: [{"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                    "metadata": {"name": f"kns.{c.ns('z')}"},
                    "spec": {"ingress": [{"action": "Allow", "source": {"selector": "pcns.ns == 'z'"}}],
                             "egress": [{"action": "Allow"}],
                             "labelsToApply": {"pcns.ns": "z", f"pcns.projectcalico.org/name": c.ns("z")}}}],
        lambda s, d, proto, port: d.ns != "z" or s.ns == "z",
    ),
    Scenario(
        "GlobalNetworkPolicy with namespaceSelector: z/b drops UDP, allows the rest",
        lambda c: [gnp("z-b-no-udp", {"namespaceSelector": "ns == 'z'", "selector": "pod == 'b'",
                                      "ingress": [{"action": "Deny", "protocol": "UDP"}, {"action": "Allow"}]})],
        lambda s, d, proto, port: not is_(d, "z/b") or proto != "udp",
    ),
    Scenario(
        "GlobalNetworkSet by label: x admits only the trusted set (y/a, z/a)",
        lambda c: [
            {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
             "metadata": {"name": "trusted", "labels": {"role": "trusted"}},
             "spec": {"nets": [f"{c.pod('y/a').ip}/32", f"{c.pod('z/a').ip}/32"]}},
            gnp("x-from-trusted", {"selector": "pcns.ns == 'x'",
                                   "ingress": [{"action": "Allow", "source": {"selector": "role == 'trusted'"}}]}),
        ],
        lambda s, d, proto, port: d.ns != "x" or s.label in ("y/a", "z/a"),
    ),
]


DATAPLANES = ("nftables", "iptables")


@pytest.fixture(scope="module", params=DATAPLANES)
def dataplane(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """Felix on one data plane for a whole pass over the scenarios; back on
    nftables (the default) afterwards for the other modules."""
    cluster.use_dataplane(request.param)
    chains = cali_chains(detect_backend("Auto"))
    if request.param == "iptables":
        assert "filter/cali-FORWARD" in chains and not nft_table_exists(cluster.table), chains
    else:
        assert not chains and nft_table_exists(cluster.table), chains
    log_start = os.path.getsize(cluster.felix.log_path)
    yield request.param
    with open(cluster.felix.log_path, encoding="utf-8", errors="replace") as f:
        f.seek(log_start)
        failures = [line for line in f.read().splitlines()
                    if any(w in line for w in ("dataplane update failed", "Traceback", "drifted", "could not"))]
    cluster.use_dataplane("nftables")
    assert not failures, f"{request.param}: Felix reported failures:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_policy_matrix(cluster: Cluster, dataplane: str, scenario: Scenario) -> None:
    cluster.set_policies(scenario.build(cluster))
    result = cluster.probe_matrix(scenario.expect, scenario.probes)
    assert not result.wrong, result.describe(scenario.name) + "\n--- Felix log ---\n" + cluster.felix.log_tail(30)
    # calicoctl policy explain's evaluator must agree with every probed cell.
    from calicoctl.explain import load_cluster
    from tests.explain.support import explain_mismatches

    disagree = explain_mismatches(load_cluster(cluster.backend), result)
    assert not disagree, "policy explain disagrees with the probes:\n" + "\n".join(disagree[:10])
