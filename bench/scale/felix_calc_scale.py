"""Felix's calculation layer at cluster scale, in-process, no kernel.

    .venv/bin/python bench/scale/felix_calc_scale.py [--endpoints 150000] [--policies 10000]
        [--namespaces 1000] [--nodes 1000] [-n 200]

One Felix (node ``node-0``) is fed, as its syncer would, every WorkloadEndpoint
of the cluster (``--endpoints`` spread over ``--nodes`` nodes and
``--namespaces`` namespaces, so ~150 are local), one ``kns.`` profile per
namespace (namespace labels -> ``pcns.`` labels), and ``--policies`` policies:
NetworkPolicies spread over the namespaces plus 1% GlobalNetworkPolicies, with
pod-selector, namespace-selector and CIDR rules like real clusters use.

Reported: time and memory (growth of the process's peak RSS) to the first flush, the work
it emitted (active policies, IP sets, members), then the p50/p99 time of one
change followed by a flush, for four kinds of change: a remote endpoint added
(a new pod elsewhere), a local endpoint's label changed, a policy's selector
changed, a namespace's labels changed.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from datastore.keys import ResourceKey  # noqa: E402
from datastore.syncer import Update  # noqa: E402
from felix.calc.graph import CalcGraph  # noqa: E402

APPS = 40  # app labels per namespace
LOCAL_NODE = "node-0"


class CountingSink:
    """Counts what the calc graph asks the data plane to do."""

    def __init__(self) -> None:
        self.calls = 0
        self.sets: dict[str, int] = {}
        self.members = 0
        self.policies: set[str] = set()
        self.endpoints: set[str] = set()

    def ipset_added(self, set_id: str, members: frozenset[str]) -> None:
        self.calls += 1
        self.sets[set_id] = len(members)
        self.members += len(members)

    def ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None:
        self.calls += 1
        self.members += len(added) - len(removed)

    def ipset_removed(self, set_id: str) -> None:
        self.calls += 1
        self.members -= self.sets.pop(set_id, 0)

    def policy_update(self, policy: Any) -> None:
        self.calls += 1
        self.policies.add(policy.policy_id)

    def policy_removed(self, policy_id: str) -> None:
        self.calls += 1
        self.policies.discard(policy_id)

    def profile_update(self, profile: Any) -> None:
        self.calls += 1

    def profile_removed(self, profile_id: str) -> None:
        self.calls += 1

    def endpoint_update(self, endpoint: Any) -> None:
        self.calls += 1
        self.endpoints.add(endpoint.endpoint_id)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self.calls += 1
        self.endpoints.discard(endpoint_id)

    def pools_update(self, pools: Any) -> None:
        self.calls += 1


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def node_of(k: int, nodes: int) -> int:
    """Spread pods over nodes independently of their namespace and app."""
    return ((k * 40503) >> 3) % nodes


def ns_name(i: int) -> str:
    return f"ns-{i}"


def profile(i: int, team: int) -> Update:
    name = f"kns.{ns_name(i)}"
    value = {
        "apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": name},
        "spec": {"labelsToApply": {"pcns.projectcalico.org/name": ns_name(i), "pcns.team": f"t{team}",
                                   "pcns.env": "prod" if i % 3 else "dev"},
                 "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
    }
    return Update(ResourceKey("Profile", name), value, "1")


def endpoint(k: int, namespaces: int, nodes: int, app: int | None = None, version: str = "v1") -> Update:
    ns = ns_name(k % namespaces)
    node = f"node-{node_of(k, nodes)}"
    name = f"{node}-k8s-pod{k}-eth0"
    a = app if app is not None else ((k * 2654435761) >> 7) % APPS
    ip = f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"
    value = {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app": f"a{a}", "role": ("frontend", "backend", "db")[k % 3],
                                "version": version, "pod-template-hash": f"{k % 97:x}",
                                "projectcalico.org/namespace": ns,
                                "projectcalico.org/orchestrator": "k8s"}},
        "spec": {"orchestrator": "k8s", "node": node, "pod": f"pod{k}", "endpoint": "eth0",
                 "containerID": f"c{k}", "interfaceName": f"cali{k:011x}",
                 "ipNetworks": [f"{ip}/32"], "profiles": [f"kns.{ns}", f"ksa.{ns}.default"],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]},
    }
    return Update(ResourceKey("WorkloadEndpoint", name, ns), value, "1")


def network_policy(p: int, namespaces: int, app_shift: int = 0) -> Update:
    ns = ns_name(p % namespaces)
    app = (p // namespaces + app_shift) % APPS
    name = f"np-{p}"
    rules: list[dict[str, Any]] = [
        {"action": "Allow", "protocol": "TCP", "source": {"selector": f"role == 'frontend' && app == 'a{app}'"},
         "destination": {"ports": [8080, "http"]}},
        {"action": "Allow", "protocol": "TCP", "source": {"namespaceSelector": f"team == 't{p % 20}'"},
         "destination": {"ports": [443]}},
    ]
    if p % 4 == 0:
        rules.append({"action": "Allow", "source": {"nets": [f"192.168.{p % 256}.0/24"]}})
    value = {
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"order": 1000, "selector": f"app == 'a{app}'", "types": ["Ingress", "Egress"],
                 "ingress": rules,
                 "egress": [{"action": "Allow", "destination": {"selector": f"role == 'db' && app == 'a{app}'"}},
                            {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}]},
    }
    return Update(ResourceKey("NetworkPolicy", name, ns), value, "1")


def global_policy(p: int) -> Update:
    name = f"gnp-{p}"
    value = {
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name},
        "spec": {"order": 100 + p, "namespaceSelector": f"env == '{'prod' if p % 2 else 'dev'}'",
                 "selector": f"role == '{('frontend', 'backend', 'db')[p % 3]}'", "types": ["Ingress"],
                 "ingress": [{"action": "Deny", "source": {"nets": [f"172.16.{p % 256}.0/24"]}},
                             {"action": "Pass", "source": {"namespaceSelector": "env == 'dev'"}}]},
    }
    return Update(ResourceKey("GlobalNetworkPolicy", name), value, "1")


def timed(graph: CalcGraph, updates: Callable[[int], list[Update]], n: int) -> list[float]:
    samples = []
    for i in range(n):
        batch = updates(i)
        start = time.perf_counter()
        graph.on_updates(batch)
        graph.flush()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=150_000)
    ap.add_argument("--policies", type=int, default=10_000)
    ap.add_argument("--namespaces", type=int, default=1_000)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("-n", type=int, default=200, help="changes timed per kind")
    args = ap.parse_args()
    rng = random.Random(7)

    sink = CountingSink()
    graph = CalcGraph(LOCAL_NODE, sink)
    n_gnp = max(1, args.policies // 100)
    n_np = args.policies - n_gnp

    t0 = time.perf_counter()
    profiles = [profile(i, i % 20) for i in range(args.namespaces)]
    endpoints = [endpoint(k, args.namespaces, args.nodes) for k in range(args.endpoints)]
    policies = [network_policy(p, args.namespaces) for p in range(n_np)] + [global_policy(p) for p in range(n_gnp)]
    build_s = time.perf_counter() - t0

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    batch = 1000  # the syncer delivers the snapshot in batches
    for chunk_start in range(0, len(profiles), batch):
        graph.on_updates(profiles[chunk_start:chunk_start + batch])
    t_profiles = time.perf_counter()
    for chunk_start in range(0, len(policies), batch):
        graph.on_updates(policies[chunk_start:chunk_start + batch])
    t_policies = time.perf_counter()
    for chunk_start in range(0, len(endpoints), batch):
        graph.on_updates(endpoints[chunk_start:chunk_start + batch])
    t_endpoints = time.perf_counter()
    graph.flush()
    t_flush = time.perf_counter()
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024

    print(f"# Felix calc layer: {args.endpoints} endpoints ({graph.local_endpoint_count} local), "
          f"{args.policies} policies ({n_gnp} global), {args.namespaces} namespaces, {args.nodes} nodes")
    print(f"input documents built in {build_s:.1f} s (not counted)")
    print()
    print("| phase | seconds |")
    print("|---|---|")
    print(f"| profiles | {t_profiles - t0:.2f} |")
    print(f"| policies | {t_policies - t_profiles:.2f} |")
    print(f"| endpoints | {t_endpoints - t_policies:.2f} |")
    print(f"| flush (resolve local endpoints) | {t_flush - t_endpoints:.2f} |")
    print(f"| **initial total** | **{t_flush - t0:.2f}** |")
    print()
    print(f"memory: RSS growth {rss_mb:.0f} MiB; "
          f"active policies {len(sink.policies)}, IP sets {len(sink.sets)}, set members {sink.members}, "
          f"local endpoints programmed {len(sink.endpoints)}, sink calls {sink.calls}")
    print()

    next_k = args.endpoints
    local_ks = [k for k in range(args.endpoints) if node_of(k, args.nodes) == 0]

    def add_remote(i: int) -> list[Update]:
        nonlocal next_k
        next_k += 1
        while node_of(next_k, args.nodes) == 0:
            next_k += 1
        return [endpoint(next_k, args.namespaces, args.nodes)]

    def relabel_local(i: int) -> list[Update]:
        k = local_ks[i % len(local_ks)]
        return [endpoint(k, args.namespaces, args.nodes, app=rng.randrange(APPS), version=f"v{i + 2}")]

    def change_policy(i: int) -> list[Update]:
        return [network_policy(rng.randrange(n_np), args.namespaces, app_shift=i + 1)]

    def relabel_namespace(i: int) -> list[Update]:
        return [profile(rng.randrange(args.namespaces), (i + 1) % 20)]

    print("| change (+ flush) | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, fn in (("remote endpoint added", add_remote), ("local endpoint relabelled", relabel_local),
                      ("policy selector changed", change_policy), ("namespace labels changed", relabel_namespace)):
        samples = timed(graph, fn, args.n)
        print(f"| {label} | {len(samples)} | {statistics.median(samples):.2f} | {pct(samples, 0.99):.2f} | "
              f"{max(samples):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
