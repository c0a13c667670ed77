"""Offline stand-ins for the Felix truth-table harness: the same scenarios'
resources (namespace profiles, WorkloadEndpoints as the CNI plugin writes
them, the scenario's policies) without network namespaces, so the evaluator
can be checked against every scenario's expected matrix in milliseconds."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

from felix.calc.evaluate import Cluster, make_flow
from felix.k8s_policy import namespace_profile, network_policy
from tests.felix.harness import NAMED_PORTS, MatrixResult

NODE = "explain-node"


@dataclass
class FakePod:
    ns: str
    name: str
    namespace: str
    ip: str
    iface: str

    @property
    def label(self) -> str:
        return f"{self.ns}/{self.name}"


class FakeCluster:
    """The parts of tests.felix.harness.Cluster that scenario builders use."""

    def __init__(self, namespaces: Iterable[str] = ("x", "y", "z"), pods: Iterable[str] = ("a", "b", "c")) -> None:
        self.subnet = ipaddress.ip_network("10.231.7.0/24")
        self.node = NODE
        self.ns_names = {ns: f"{ns}-ex" for ns in namespaces}
        hosts = self.subnet.hosts()
        next(hosts)
        self.pods = [FakePod(ns, name, self.ns_names[ns], str(next(hosts)), f"caliex{ns}{name}")
                     for ns in namespaces for name in pods]

    def pod(self, label: str) -> FakePod:
        return next(p for p in self.pods if p.label == label)

    def ns(self, logical: str) -> str:
        return self.ns_names[logical]

    def k8s_policy(self, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return network_policy({"metadata": {"name": name, "namespace": self.ns(ns)}, "spec": spec})

    def calico_policy(self, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": self.ns(ns)}, "spec": spec}

    def base_resources(self) -> list[dict[str, Any]]:
        out = [namespace_profile(real, {"ns": ns, "kubernetes.io/metadata.name": real})
               for ns, real in self.ns_names.items()]
        for p in self.pods:
            out.append({
                "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": f"{NODE}-k8s-{p.name}-eth0", "namespace": p.namespace,
                             "labels": {"projectcalico.org/orchestrator": "k8s",
                                        "projectcalico.org/namespace": p.namespace, "pod": p.name}},
                "spec": {"orchestrator": "k8s", "node": NODE, "pod": p.name, "endpoint": "eth0",
                         "containerID": f"c-{p.ns}-{p.name}", "interfaceName": p.iface,
                         "ipNetworks": [f"{p.ip}/32"], "profiles": [f"kns.{p.namespace}"],
                         "ports": NAMED_PORTS},
            })
        return out


def merge(base: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``extra`` applied over ``base`` (same kind/namespace/name replaces)."""
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        m = r["metadata"]
        return r["kind"], m.get("namespace") or "", m["name"]

    out = {key(r): r for r in base}
    out.update({key(r): r for r in extra})
    return list(out.values())


def explain_mismatches(cluster: Cluster, result: MatrixResult) -> list[str]:
    """Cells of a probed matrix where the evaluator's verdict differs from the probe."""
    by_label = {p.label: p for p in result.pods}
    wrong = []
    for cell, observed in result.actual.items():
        src, dst = by_label[cell[0]], by_label[cell[1]]
        proto, port = cell[2], cell[3]
        flow = make_flow(src.ip, dst.ip, proto, None if proto == "icmp" else port)
        exp = cluster.explain(flow)
        if (exp.verdict == "Allow") != observed:
            d = exp.decider
            wrong.append(f"{cell}: probe {'ALLOW' if observed else 'DENY'}, explain {exp.verdict}"
                         f" ({d[0]} {d[1].describe() if d else ''})")
    return wrong
