"""Scenario: a datastore that answers slowly, then not at all.

One simulated node reaches etcd (in the fabric netns) through a latency proxy
inside the node (tests/chaos/latency_proxy.py; this kernel has no netem) that
adds 300 ms to every request, and later blackholes everything. The node runs
Typha and confd + BIRD through that path, and Felix reading from Typha.
Checked: ADDs under latency finish (or fail with error JSON) within the exec
timeout; an ADD during the partition fails cleanly; Felix keeps its last good
nftables rules, Typha stays up, confd keeps BIRD's config and BIRD running
while etcd is unreachable; all catch up with changes made meanwhile (a policy
profile, a block for this node) once the link heals; after GC nothing leaked.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.chaos.etcd_kill import Attempt, _gc_and_check, classify
from tests.chaos.felix_node import NodeFelix, NodeTypha, allow_all_profile
from tests.chaos.latency_proxy import LatencyProxy
from tests.chaos.report import ChaosReport
from tests.support.nodes import Cluster, ip, wait_for

POOL = "10.67.0.0/16"
NEW_BLOCK = "10.67.250.0/26"


def _bird_config(node) -> str:  # type: ignore[no-untyped-def]
    try:
        with open(node.config_path) as f:
            return f.read()
    except OSError:
        return ""


def _attempt(node, name: str) -> Attempt:  # type: ignore[no-untyped-def]
    cid = uuid.uuid4().hex
    a = Attempt(node, name, f"{node.netns}-{name}", cid,
                f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}")
    ip("netns", "add", a.netns)
    return a


ENDPOINT: dict[str, str] = {}  # node name -> the etcd endpoint its components use


def _conf(node):  # type: ignore[no-untyped-def]
    return dict(node.netconf(), etcd_endpoints=ENDPOINT.get(node.name, node.cluster.etcd_endpoint))


def _add(a: Attempt) -> float:
    t0 = time.monotonic()
    res = a.node.cni("ADD", _conf(a.node), a.cid, a.netns_path, cni_args=a.args)
    a.rc, a.stdout, a.finished = res.returncode, res.stdout, time.monotonic()
    return a.finished - t0


def run(delay_ms: int = 300, slow_adds: int = 4, partition_s: float = 8.0) -> ChaosReport:
    report = ChaosReport(f"slow datastore: +{delay_ms} ms per request on the node's path to etcd, "
                         f"then a {partition_s:.0f} s partition")
    with Cluster() as cluster:
        cluster.create_pool(POOL)
        allow_all_profile(cluster)
        node = cluster.add_node("slow-0")
        proxy = LatencyProxy(node.netns, cluster.fabric, (cluster.fabric_ip, 2379), 0.0)
        ENDPOINT[node.name] = proxy.endpoint
        # Typha and confd reach etcd through the proxy; Felix reads through Typha.
        typha = NodeTypha(node)
        typha.env["ETCD_ENDPOINTS"] = proxy.endpoint
        typha.start()
        felix = NodeFelix(node, {"FELIX_TYPHAADDR": typha.addr, "FELIX_LOGSEVERITYSCREEN": "Debug"}).start()
        node.start_confd({"ETCD_ENDPOINTS": proxy.endpoint})
        attempts: list[Attempt] = []
        try:
            first = _attempt(node, "warm")
            attempts.append(first)
            _add(first)
            felix.wait(allow_all_profile_update(cluster, "warm"), timeout=90)
            wait_for(lambda: _bird_config(node) and node.bird_pid(), 60, what="confd + BIRD up")

            proxy.delay = delay_ms / 1000
            slow = [_attempt(node, f"slow{i}") for i in range(slow_adds)]
            attempts += slow
            with ThreadPoolExecutor(slow_adds) as pool:
                durations = list(pool.map(_add, slow))
            report.notes.append(f"ADD under {delay_ms} ms: " + ", ".join(f"{d:.1f}" for d in sorted(durations))
                                + " s")
            rev = allow_all_profile_update(cluster, "slow")
            t = felix.wait(rev, timeout=90)
            report.notes.append(f"Felix applied a change over the slow link in {t:.1f} s")

            before = felix.ruleset()
            bird_before, bird_pid = _bird_config(node), node.bird_pid()
            proxy.blackhole()
            cut = time.monotonic()
            part = _attempt(node, "cut")
            attempts.append(part)
            d = _add(part)
            report.notes.append(f"ADD during the partition ended after {d:.1f} s (rc {part.rc})")
            rev = allow_all_profile_update(cluster, "during-partition")  # Felix cannot see this yet
            cluster.claim_block(node.name, NEW_BLOCK)  # nor confd this
            time.sleep(max(0.0, partition_s - (time.monotonic() - cut)))
            kept = {
                "Felix rules": felix.ruleset() == before and felix.proc is not None and felix.proc.alive(),
                "Typha": typha.proc is not None and typha.proc.alive(),
                "BIRD config": _bird_config(node) == bird_before and NEW_BLOCK not in bird_before,
                "BIRD": node.bird_pid() == bird_pid,
            }
            report.notes.append("kept through the partition: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
            if not all(kept.values()):
                report.leaks_after_gc += 1  # counted as a broken promise
            proxy.heal()
            healed = time.monotonic()
            felix.wait(rev, timeout=120)
            t_felix = time.monotonic() - healed
            wait_for(lambda: NEW_BLOCK in _bird_config(node), 120, what="confd renders the new block")
            t_confd = time.monotonic() - healed
            report.notes.append(f"after healing: Felix (via Typha) {t_felix:.1f} s, confd {t_confd:.1f} s")
            report.converge_s = max(t_felix, t_confd)
            for a in attempts:
                classify(a, report)
            _gc_and_check(cluster, [node], attempts, report)
        finally:
            felix.stop()
            typha.stop()
            node.stop_confd()
            proxy.heal()
            for a in attempts:
                if a.address is not None:
                    node.cni("DEL", node.netconf(), a.cid, a.netns_path, cni_args=a.args)
                ip("netns", "del", a.netns, check=False)
            proxy.close()
    return report


def allow_all_profile_update(cluster, tag: str) -> int:  # type: ignore[no-untyped-def]
    """Change the kns.default profile (a label) so Felix has something to apply; its revision."""
    from datastore.keys import ResourceKey

    key = ResourceKey("Profile", "kns.default")
    kv = cluster.backend.get(key)
    value = dict(kv.value)
    value["spec"] = dict(value["spec"], labelsToApply={"chaos": tag})
    return int(cluster.backend.update(key, value, kv.revision).revision)
