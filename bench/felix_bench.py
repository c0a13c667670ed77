"""Felix at scale: 200 local endpoints, 1,000 policies.

    .venv/bin/python bench/felix_bench.py [-n 40] [--starts 3]

1. From scratch: the datastore holds 200 WorkloadEndpoints of this node
   (2 real pods made by the calico CNI plugin + 198 endpoints on host-only
   veth interfaces), 10 namespace profiles and 1,000 policies (999
   NetworkPolicies, 10 per endpoint, each with two ingress rules and an
   egress rule, plus one GlobalNetworkPolicy); a Felix starts with an empty
   table. Reported: process start -> table programmed (Felix's readiness) and
   Felix's own calc / nft apply times, then probe-verified (pod A -> pod B).
2. Policy change latency: one policy selecting pod B gets (then loses) a rule
   allowing UDP from pod A. Pod A sends a datagram every millisecond; pod B's
   agent timestamps arrivals. Latency = first arrival after the etcd write
   (allow) / last arrival (deny), p50 and p95 over ``-n`` changes each.

Starts its own etcd; removes its namespaces, interfaces and table.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datastore.etcd import EtcdBackend  # noqa: E402
from datastore.keys import ListOptions, ResourceKey  # noqa: E402
from felix.k8s_policy import namespace_profile  # noqa: E402
from tests.felix.harness import Cluster, FLOOD_PORT, nft, nft_table_exists  # noqa: E402
from tests.support.cni_exec import make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402

N_ENDPOINTS = 200
N_POLICIES = 1000
N_NAMESPACES = 10


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def policy(k: int, ns: str, extra_rule: bool = False) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = [
        {"action": "Allow", "protocol": "TCP", "source": {"selector": f"role == 'r{k % 50}'"},
         "destination": {"ports": [80, 443]}},
        {"action": "Allow", "protocol": "UDP", "source": {"namespaceSelector": f"team == 't{k % 5}'"}},
    ]
    if extra_rule:
        ingress.append({"action": "Allow", "protocol": "UDP",
                        "source": {"namespaceSelector": "all()", "selector": "role == 'probe-src'"},
                        "destination": {"ports": [FLOOD_PORT]}})
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": f"pol-{k}", "namespace": ns},
        "spec": {
            "order": 100 + k % 7,
            "selector": f"group == 'g{(k // N_NAMESPACES) % 10}'",
            "types": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [{"action": "Allow", "destination": {"nets": [f"10.{k % 256}.0.0/16"]}}],
        },
    }


class Bench:
    def __init__(self, etcd: EtcdServer) -> None:
        self.backend = EtcdBackend(etcd.endpoint)
        # Reuse the test harness for the node, Felix and the two real pods.
        self.cni_dir = tempfile.mkdtemp(prefix="felix-bench-cni-")
        self.cluster = Cluster(self.backend, etcd.endpoint, make_cni_path(self.cni_dir),
                               namespaces=("n0", "n1"), pods=("a",))
        c = self.cluster
        self.namespaces = [f"b{c.uid}-n{i}" for i in range(N_NAMESPACES)]
        c.ns_names = {"n0": self.namespaces[0], "n1": self.namespaces[1]}
        for pod in c.pods:
            pod.namespace = c.ns_names[pod.ns]
        c.felix.env.update({"FELIX_LOGSEVERITYSCREEN": "Info", "FELIX_NFTABLESREFRESHINTERVAL": "180",
                            "FELIX_ROUTEREFRESHINTERVAL": "90"})
        self.fake_ifaces = [f"calb{c.uid[:4]}{i:03d}" for i in range(N_ENDPOINTS - 2)]
        self.synthetic_net = ipaddress.ip_network(f"172.{16 + int(c.uid[:2], 16) % 16}.0.0/16")

    # -- setup --------------------------------------------------------------------------------

    def populate(self) -> None:
        c = self.cluster
        for i, ns in enumerate(self.namespaces):
            c.put(namespace_profile(ns, {"team": f"t{i % 5}"}))
        for pod in c.pods:
            pod.netns.__enter__()
        for pod in c.pods:
            c._add_pod(pod)
            pod.start_agent()
        # Real pods: A is endpoint 0 (n0, group g0), B is endpoint 1 (n1, group g0).
        for index, pod in enumerate(c.pods):
            for kv in self.backend.list(ListOptions("WorkloadEndpoint", namespace=pod.namespace)).items:
                if kv.value["spec"].get("pod") == pod.name:
                    labels = kv.value["metadata"]["labels"]
                    labels.update({"group": "g0", "role": "probe-src" if index == 0 else "probe-dst"})
                    self.backend.update(kv.key, kv.value, kv.revision)
        # No dummy driver in this kernel: veth pairs with both ends on the host.
        batch = "".join(f"link add {d} type veth peer name p{d[1:]}\nlink set {d} up\nlink set p{d[1:]} up\n"
                        for d in self.fake_ifaces)
        subprocess.run(["ip", "-batch", "-"], input=batch.encode(), check=True)
        hosts = self.synthetic_net.hosts()
        for n, iface in enumerate(self.fake_ifaces):
            i = n + 2
            ns = self.namespaces[i % N_NAMESPACES]
            name = f"{c.node.replace('-', '--')}-k8s-pod{i}-eth0"
            self.backend.create(ResourceKey("WorkloadEndpoint", name, ns), {
                "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": name, "namespace": ns, "labels": {
                    "projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s",
                    "group": f"g{(i // N_NAMESPACES) % 10}", "role": f"r{i % 50}"}},
                "spec": {"orchestrator": "k8s", "node": c.node, "pod": f"pod{i}", "endpoint": "eth0",
                         "interfaceName": iface, "ipNetworks": [f"{next(hosts)}/32"],
                         "profiles": [f"kns.{ns}"]},
            })
        for k in range(N_POLICIES - 1):
            self.backend.create(ResourceKey("NetworkPolicy", f"pol-{k}", self.namespaces[k % N_NAMESPACES]),
                                policy(k, self.namespaces[k % N_NAMESPACES]))
        self.backend.create(ResourceKey("GlobalNetworkPolicy", "probe-egress"), {
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "probe-egress"},
            "spec": {"order": 1, "selector": "role == 'probe-src'", "types": ["Egress"],
                     "egress": [{"action": "Allow"}]}})

    def cleanup(self) -> None:
        c = self.cluster
        c.felix.stop()
        for pod in c.pods:
            pod.stop_agent()
            pod.netns.delete()
        batch = "".join(f"link del {d}\n" for d in self.fake_ifaces)
        subprocess.run(["ip", "-force", "-batch", "-"], input=batch.encode(), capture_output=True)
        if nft_table_exists(c.table):
            nft("delete", "table", "inet", c.table, check=False)
        self.backend.close()
        shutil.rmtree(c.workdir, ignore_errors=True)
        shutil.rmtree(self.cni_dir, ignore_errors=True)

    # -- measurements --------------------------------------------------------------------------

    def probe_b(self, timeout: float = 0.3) -> bool:
        a, b = self.cluster.pods
        return bool(a.cmd({"cmd": "probe", "timeout": timeout, "targets": [[b.ip, "udp", 80]]})["results"][0])

    def cold_start(self) -> dict[str, float]:
        c = self.cluster
        if nft_table_exists(c.table):
            nft("delete", "table", "inet", c.table)
        t0 = time.monotonic()
        c.felix.start()
        c.felix.wait_ready(timeout=300)
        ready = time.monotonic() - t0
        metrics = c.felix.metrics()
        listing = nft("list", "table", "inet", c.table)
        stats = {
            "ready_s": ready,
            "calc_s": metrics.get("felix_calc_graph_update_time_seconds_sum", 0.0),
            "apply_s": metrics.get("felix_int_dataplane_apply_time_seconds_sum", 0.0),
            "endpoints": metrics.get("felix_active_local_endpoints", 0.0),
            "policies": metrics.get("felix_active_local_policies", 0.0),
            "chains": float(listing.count("\tchain ")),
            "rules": float(sum(1 for line in listing.splitlines() if "comment \"" in line)),
            "sets": float(listing.count("\tset ")),
        }
        # Probe-verified: B admits UDP from team t1 namespaces only; A is in t0.
        stats["a_to_b_udp80_denied"] = float(not self.probe_b())
        return stats

    def change_latency(self, n: int) -> tuple[list[float], list[float]]:
        c = self.cluster
        a, b = c.pods
        ns_b = self.namespaces[1]
        allow, deny = [], []
        key = ResourceKey("NetworkPolicy", "pol-1", ns_b)
        revision = self.backend.get(key).revision

        def write(extra: bool) -> float:
            """One etcd transaction (CAS update); returns the time just before it."""
            nonlocal revision
            t = time.monotonic()
            revision = self.backend.update(key, policy(1, ns_b, extra_rule=extra), revision).revision
            return t

        a.cmd({"cmd": "udpflood", "target": [b.ip, FLOOD_PORT], "interval": 0.001, "duration": n * 2.0 + 30})
        for _ in range(n):
            t0 = write(True)
            reply = b.cmd({"cmd": "first_udp", "port": FLOOD_PORT, "after": t0, "timeout": 5})
            if reply["t"] is None:
                raise SystemExit(f"allow never took effect; Felix log:\n{c.felix.log_tail()}")
            allow.append((reply["t"] - t0) * 1000)
            time.sleep(0.15)
            t0 = write(False)
            # Wait until arrivals stop, then take the last one.
            deadline = time.monotonic() + 5
            last = None
            while time.monotonic() < deadline:
                time.sleep(0.05)
                last = b.cmd({"cmd": "last_udp", "port": FLOOD_PORT})["t"]
                if last is not None and time.monotonic() - last > 0.1:
                    break
            if last is None or time.monotonic() - last <= 0.1:
                raise SystemExit("deny never took effect")
            deny.append(max(0.0, (last - t0) * 1000))
            time.sleep(0.1)
        return allow, deny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="policy changes per direction")
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, nftables)")
    with EtcdServer() as etcd:
        bench = Bench(etcd)
        try:
            t = time.monotonic()
            bench.populate()
            print(f"datastore populated: {N_ENDPOINTS} endpoints, {N_POLICIES} policies "
                  f"({time.monotonic() - t:.1f} s)")
            starts = []
            for i in range(args.starts):
                if i:
                    bench.cluster.felix.stop()
                starts.append(bench.cold_start())
            s = starts[-1]
            print(f"\nfrom scratch ({args.starts} cold starts, empty table each time):")
            print(f"  process start -> table programmed (ready): "
                  f"median {statistics.median(x['ready_s'] for x in starts):.2f} s, "
                  f"min {min(x['ready_s'] for x in starts):.2f} s")
            print(f"  of which calc graph {statistics.median(x['calc_s'] for x in starts) * 1000:.0f} ms, "
                  f"nft transaction {statistics.median(x['apply_s'] for x in starts) * 1000:.0f} ms")
            print(f"  programmed: {s['endpoints']:.0f} endpoints, {s['policies']:.0f} active policies, "
                  f"{s['chains']:.0f} chains, {s['rules']:.0f} rules, {s['sets']:.0f} sets; "
                  f"probe A->B udp/80 denied as expected: {bool(s['a_to_b_udp80_denied'])}")
            allow, deny = bench.change_latency(args.n)
            print(f"\npolicy change -> live in the kernel (probe-verified, n={args.n} each):")
            print(f"  allow: p50 {pct(allow, 0.5):.1f} ms  p95 {pct(allow, 0.95):.1f} ms  max {max(allow):.1f} ms")
            print(f"  deny:  p50 {pct(deny, 0.5):.1f} ms  p95 {pct(deny, 0.95):.1f} ms  max {max(deny):.1f} ms")
            m = bench.cluster.felix.metrics()
            count = m.get("felix_int_dataplane_apply_time_seconds_count", 0)
            print(f"  Felix nft transactions: {count:.0f}, mean "
                  f"{m.get('felix_int_dataplane_apply_time_seconds_sum', 0) / max(count, 1) * 1000:.1f} ms")
        finally:
            bench.cleanup()


if __name__ == "__main__":
    main()
