"""Flow logs end to end: real pods (netns + the CNI plugin), a real Felix on
nftables with NFLOG flow logging, real probes; the records in flows.log, the
Prometheus counters, staged policies and the agreement with policy explain."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import pytest

from tests.felix.harness import Cluster, Pod

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def probe(src: Pod, dst: Pod, proto: str, port: int, timeout: float = 0.5) -> bool:
    reply = src.cmd({"cmd": "probe", "timeout": timeout, "targets": [[dst.ip, proto, port]]})
    return bool(reply["results"][0])


def read_records(cluster: Cluster) -> list[dict[str, Any]]:
    path = os.path.join(cluster.flowlog_dir, "flows.log")  # type: ignore[attr-defined]
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def wait_record(cluster: Cluster, match: Callable[[dict[str, Any]], bool], since: float,
                timeout: float = 15.0) -> tuple[dict[str, Any], float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in read_records(cluster):
            if r["end_time"] >= since and match(r):
                return r, time.time() - since
        time.sleep(0.05)
    raise AssertionError(f"no matching flow record in {timeout}s; last records:\n"
                         + "\n".join(json.dumps(r) for r in read_records(cluster)[-8:])
                         + "\n--- Felix log ---\n" + cluster.felix.log_tail(30))


def between(src: Pod, dst: Pod, reporter: str, port: int, action: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: (r["source_ip"] == src.ip and r["dest_ip"] == dst.ip and r["reporter"] == reporter
                      and r["dest_port"] == port and r["action"] == action)


def deny_policy(cluster: Cluster) -> dict[str, Any]:
    return cluster.calico_policy("y", "deny-x-80", {
        "order": 10, "selector": "all()",
        "ingress": [{"action": "Allow", "protocol": "UDP"},
                    {"action": "Deny", "protocol": "TCP", "source": {"namespaceSelector": "ns == 'x'"},
                     "destination": {"ports": [80]}},
                    {"action": "Allow"}]})


def staged_deny(cluster: Cluster) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "StagedNetworkPolicy",
            "metadata": {"name": "staged-deny-81", "namespace": cluster.ns("y")},
            "spec": {"stagedAction": "Set", "order": 5, "selector": "pod == 'b'",
                     "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}}]}}


def test_denied_probe_logged_with_policy_and_rule(flow_cluster: Cluster) -> None:
    c = flow_cluster
    c.set_policies([deny_policy(c), staged_deny(c)])
    xa, ya, yb = c.pod("x/a"), c.pod("y/a"), c.pod("y/b")
    since = time.time()
    assert not probe(xa, ya, "tcp", 80)
    rec, latency = wait_record(c, between(xa, ya, "dst", 80, "deny"), since)
    ns = c.ns("y")
    assert rec["rule"] == {"kind": "policy", "name": f"np/{ns}/deny-x-80", "tier": "default",
                           "direction": "Ingress", "index": 1}
    assert rec["policies"]["enforced_policies"] == [f"0|default|np/{ns}/deny-x-80|deny|1"]
    assert (rec["source_namespace"], rec["source_name"], rec["dest_namespace"], rec["dest_name"], rec["proto"]) == \
        (c.ns("x"), "a", ns, "a", "tcp")
    assert rec["dest_labels"]["pod"] == "a" and rec["num_flows"] >= 1
    # The source side allowed it (namespace profile) and reported so.
    src_rec, _ = wait_record(c, between(xa, ya, "src", 80, "allow"), since)
    assert src_rec["rule"]["kind"] == "profile" and src_rec["rule"]["name"] == f"kns.{c.ns('x')}"
    print(f"flow log latency (probe -> record in flows.log): {latency * 1000:.0f} ms")

    # Allowed by rule 0 (UDP): logged as allow with that rule.
    since = time.time()
    assert probe(xa, ya, "udp", 80)
    rec, _ = wait_record(c, between(xa, ya, "dst", 80, "allow"), since)
    assert (rec["rule"]["name"], rec["rule"]["index"], rec["proto"]) == (f"np/{ns}/deny-x-80", 0, "udp")

    # policy explain names the same rule.
    from calicoctl.explain import explain

    exp = explain(c.backend, f"{c.ns('x')}/a", f"{ns}/a", 80, "TCP")
    assert exp.verdict == "Deny"
    direction, step = exp.decider
    assert (direction, step.name, step.rule) == ("Ingress", f"np/{ns}/deny-x-80", 1)

    # Per-rule Prometheus counters.
    metrics = c.felix.metrics()
    key = (f'felix_flowlogs_rule_packets_total{{direction="Ingress",policy="np/{ns}/deny-x-80",'
           f'rule="1",action="Deny"}}')
    assert metrics.get(key, 0) >= 1, sorted(k for k in metrics if "flowlogs" in k)
    assert metrics.get('felix_flowlogs_records_total{reporter="dst",action="deny",pending_action="deny"}', 0) >= 1


def test_staged_deny_would_deny_without_blocking(flow_cluster: Cluster) -> None:
    c = flow_cluster
    c.set_policies([deny_policy(c), staged_deny(c)])
    xb, yb = c.pod("x/b"), c.pod("y/b")
    since = time.time()
    assert probe(xb, yb, "tcp", 81), "a staged deny must not block traffic"
    rec, _ = wait_record(c, between(xb, yb, "dst", 81, "allow"), since)
    ns = c.ns("y")
    assert rec["pending_action"] == "deny"
    assert rec["pending_rule"] == {"kind": "policy", "name": f"np/{ns}/staged-deny-81", "tier": "default",
                                   "index": 0, "staged": True}
    assert rec["policies"]["pending_policies"] == [f"0|default|staged:np/{ns}/staged-deny-81|deny|0"]
    assert rec["policies"]["enforced_policies"] == [f"0|default|np/{ns}/deny-x-80|allow|2"]


def test_rotation_keeps_max_files(tmp_path: Any) -> None:
    from felix.flowlogs.collector import FlowLogFile

    out = FlowLogFile(str(tmp_path), max_bytes=300, max_files=3)
    for i in range(40):
        out.write([{"n": i, "pad": "x" * 40}])
    names = sorted(os.listdir(tmp_path))
    assert names == ["flows.log", "flows.log.1", "flows.log.2"]
    assert all(os.path.getsize(tmp_path / n) <= 300 for n in names)
    last = [json.loads(line)["n"] for line in open(tmp_path / "flows.log")]
    assert last[-1] == 39


