"""The flow evaluator against every Felix truth-table scenario (offline: the
scenario's resources and the CNI plugin's WorkloadEndpoints, no kernel).

The same scenarios run on real nftables / iptables in tests/felix, where each
probed matrix is also checked against the evaluator (``explain_mismatches``)."""
from __future__ import annotations

import pytest

from felix.calc.evaluate import Cluster, make_flow
from tests.explain.support import FakeCluster, merge
from tests.felix.test_policy_matrix import SCENARIOS, Scenario, gnp


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_evaluator_predicts_truth_table(scenario: Scenario) -> None:
    fake = FakeCluster()
    cluster = Cluster(merge(fake.base_resources(), scenario.build(fake)))  # type: ignore[arg-type]
    wrong = []
    for src in fake.pods:
        for dst in fake.pods:
            if src is dst:
                continue
            for proto, port in scenario.probes:
                want = bool(scenario.expect(src, dst, proto, port))  # type: ignore[arg-type]
                exp = cluster.explain(make_flow(src.ip, dst.ip, proto, None if proto == "icmp" else port))
                if (exp.verdict == "Allow") != want:
                    wrong.append(f"{src.label}->{dst.label} {proto}/{port}: want {want}, "
                                 f"explain {exp.to_dict()['decidedBy']}")
    assert not wrong, "\n".join(wrong[:10])


def _cluster(extra: list[dict]) -> tuple[FakeCluster, Cluster]:
    fake = FakeCluster()
    return fake, Cluster(merge(fake.base_resources(), extra))


def test_trace_names_policy_and_rule() -> None:
    fake, cluster = _cluster([
        gnp("log-deny", {"order": 5, "selector": "pcns.ns == 'x'",
                         "ingress": [{"action": "Log"}, {"action": "Allow", "protocol": "UDP"},
                                     {"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}}]}),
    ])
    a, b = fake.pod("y/a"), fake.pod("x/b")
    exp = cluster.explain(make_flow(a.ip, b.ip, "TCP", 81))
    assert exp.verdict == "Deny"
    direction, step = exp.decider  # type: ignore[misc]
    assert (direction, step.kind, step.name, step.rule, step.logged) == ("Ingress", "policy", "gnp/log-deny", 2, [0])
    # TCP 80 matches no rule: the default tier's end-of-tier deny decides.
    exp = cluster.explain(make_flow(a.ip, b.ip, "TCP", 80))
    assert exp.verdict == "Deny"
    assert [s.kind for s in exp.ingress.steps] == ["policy", "tier-default"]  # type: ignore[union-attr]
    # Egress of y/a: no policy, the namespace profile allows.
    assert exp.egress.decider.kind == "profile" and exp.egress.verdict == "Allow"  # type: ignore[union-attr]
    assert exp.to_dict()["decidedBy"]["name"] == "default"


def test_address_outside_the_cluster_has_no_side() -> None:
    fake, cluster = _cluster([fake_deny := gnp("deny-x", {"selector": "pcns.ns == 'x'", "types": ["Ingress"]})])
    exp = cluster.explain(make_flow("192.0.2.1", fake.pod("x/a").ip, "TCP", 80))
    assert exp.egress is None and exp.verdict == "Deny" and exp.decider[1].kind == "tier-default"  # type: ignore[index]
    assert fake_deny["kind"] == "GlobalNetworkPolicy"


def test_staged_policies_would_deny_without_enforcing() -> None:
    staged = {"apiVersion": "projectcalico.org/v3", "kind": "StagedGlobalNetworkPolicy",
              "metadata": {"name": "deny-z"},
              "spec": {"stagedAction": "Set", "order": 1, "selector": "pcns.ns == 'x'",
                       "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}}]}}
    fake, cluster = _cluster([staged])
    z, x = fake.pod("z/a"), fake.pod("x/a")
    exp = cluster.explain(make_flow(z.ip, x.ip, "TCP", 80))
    assert exp.verdict == "Allow" and exp.staged_verdict == "Deny"
    step = exp.staged_decider[1]  # type: ignore[index]
    assert (step.name, step.rule, step.staged) == ("gnp/deny-z", 0, True)
    assert exp.to_dict()["staged"]["summary"] == "would deny"
    # A staged Delete of an enforced deny: would allow.
    enforced = gnp("deny-all-x", {"selector": "pcns.ns == 'x'", "types": ["Ingress"]})
    delete = {"apiVersion": "projectcalico.org/v3", "kind": "StagedGlobalNetworkPolicy",
              "metadata": {"name": "deny-all-x"}, "spec": {"stagedAction": "Delete", "selector": "all()"}}
    _, cluster = _cluster([enforced, delete])
    exp = cluster.explain(make_flow(z.ip, x.ip, "UDP", 81))
    assert (exp.verdict, exp.staged_verdict) == ("Deny", "Allow")


def test_staged_kubernetes_policy() -> None:
    fake = FakeCluster()
    sknp = {"apiVersion": "projectcalico.org/v3", "kind": "StagedKubernetesNetworkPolicy",
            "metadata": {"name": "deny-in", "namespace": fake.ns("y")},
            "spec": {"stagedAction": "Set", "podSelector": {}, "policyTypes": ["Ingress"]}}
    cluster = Cluster(merge(fake.base_resources(), [sknp]))
    exp = cluster.explain(make_flow(fake.pod("x/a").ip, fake.pod("y/b").ip, "TCP", 80))
    assert exp.verdict == "Allow" and exp.staged_verdict == "Deny"
    assert exp.staged_decider[1].kind == "tier-default"  # type: ignore[index]
