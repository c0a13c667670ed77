"""confd + BIRD benchmarks.

    .venv/bin/python bench/bird_bench.py [-n 20] [--nodes 200] [--skip-latency]

1. Claim-to-route latency: two simulated nodes (tests/support/nodes.py) run
   calico-confd + BIRD 2; a block is claimed for node A (Block + confirmed
   BlockAffinity written to etcd, as calico-ipam does) and the time until the
   block's route appears in node B's kernel table (``ip monitor route`` in
   B's netns) is measured, n times. Also reported: until A's own blackhole
   route appears (confd render + ``bird -p`` + write + reconfigure), so the
   BGP leg is the difference.
2. Render time for an N-node cluster: full mesh (each node has N-1 sessions)
   versus route reflectors (2 RRs, mesh off: a client has 2 sessions, an RR
   has N-1), per node and for the whole cluster, plus BIRD's parse time of
   the biggest file (``bird -p``).

Creates and removes its own namespaces, etcd and BIRDs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bird.peerings import plan_sessions  # noqa: E402
from bird.render import render  # noqa: E402
from bird.state import BGPState  # noqa: E402
from datastore.keys import BlockAffinityKey, ResourceKey  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class RouteMonitor:
    """``ip monitor route`` in a netns: when each destination first appeared."""

    def __init__(self, netns: str) -> None:
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(["ip", "-n", netns, "monitor", "route"], stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.perf_counter()
            parts = line.split()
            if not parts or parts[0] == "Deleted":
                continue
            dest = parts[1] if parts[0] in ("blackhole", "unreachable", "prohibit") else parts[0]
            with self._cond:
                self.seen.setdefault(dest, now)
                self._cond.notify_all()

    def wait(self, dest: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while dest not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"route {dest} did not appear")
                self._cond.wait(left)
            return self.seen[dest]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def latency_bench(n: int) -> dict[str, list[float]]:
    from tests.support.nodes import Cluster

    with Cluster() as cluster:
        cluster.create_pool("10.66.0.0/16")
        a, b = cluster.add_node("node-a"), cluster.add_node("node-b")
        a.start_confd()
        b.start_confd()
        a.wait_established({b.ip})
        b.wait_established({a.ip})
        mon_a, mon_b = RouteMonitor(a.netns), RouteMonitor(b.netns)
        time.sleep(0.3)  # let the monitors attach
        from datastore.keys import BlockKey
        from datastore.models.ipam import AllocationBlock

        writes, own, remote = [], [], []
        try:
            for i in range(n):
                cidr = f"10.66.{i}.0/26"
                # The block first (not yet routable), then the clock starts at
                # the claim proper: the confirmed affinity, what confd watches.
                cluster.backend.create(BlockKey(cidr), AllocationBlock.new(cidr, affinity="host:node-a").to_dict())
                start = time.perf_counter()
                cluster.backend.apply(BlockAffinityKey("node-a", cidr), {"state": "confirmed", "deleted": False})
                writes.append((time.perf_counter() - start) * 1000)
                remote.append((mon_b.wait(cidr) - start) * 1000)
                own.append((mon_a.wait(cidr) - start) * 1000)
                time.sleep(0.2)  # spaced claims: measure one at a time
        finally:
            mon_a.close()
            mon_b.close()
        return {"affinity write (etcd)": writes, "own blackhole on A": own, "route in B's kernel": remote}


def mesh_state(n: int, rrs: int = 0) -> BGPState:
    state = BGPState()

    def apply(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
        state.apply(ResourceKey(kind, name), {"apiVersion": "projectcalico.org/v3", "kind": kind,
                                              "metadata": meta, "spec": spec})

    apply("IPPool", "pool", {"cidr": "10.128.0.0/9"})
    for i in range(n):
        bgp: dict[str, Any] = {"ipv4Address": f"172.20.{i // 250}.{i % 250 + 1}/16"}
        labels = None
        if i < rrs:
            bgp["routeReflectorClusterID"] = "244.0.0.1"
            labels = {"route-reflector": "true"}
        apply("Node", f"node-{i:03d}", {"bgp": bgp}, labels)
        state.apply(BlockAffinityKey(f"node-{i:03d}", f"10.{128 + i // 256}.{i % 256}.0/26"),
                    {"state": "confirmed", "deleted": False})
    if rrs:
        apply("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})
        apply("BGPPeer", "to-rr", {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})
    return state


def timeit(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bird_parse_ms(text: str) -> float:
    bird = shutil.which("bird") or "/usr/sbin/bird"
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
        f.write(text)
        f.flush()
        return timeit(lambda: subprocess.run([bird, "-p", "-c", f.name], check=True), 5)


def render_bench(n: int) -> list[tuple[str, int, float, int, float | None]]:
    rows: list[tuple[str, int, float, int, float | None]] = []
    mesh = mesh_state(n)
    rr = mesh_state(n, rrs=2)
    client, reflector = "node-010", "node-000"
    for label, state, node in (("mesh: a node", mesh, client),
                               ("route reflectors: a client", rr, client),
                               ("route reflectors: an RR", rr, reflector)):
        text = render(state, node)
        sessions = len(plan_sessions(state, node).sessions)
        rows.append((label, sessions, timeit(lambda: render(state, node), 10), len(text), bird_parse_ms(text)))
    for label, state in (("mesh: whole cluster", mesh), ("route reflectors: whole cluster", rr)):
        names = sorted(state.nodes)
        total = sum(len(plan_sessions(state, node).sessions) for node in names)
        ms = timeit(lambda: [render(state, node) for node in names], 1)
        rows.append((label, total, ms, 0, None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="blocks to claim (latency)")
    parser.add_argument("--nodes", type=int, default=200, help="cluster size for the render bench")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    if not args.skip_latency:
        results = latency_bench(args.n)
        print(f"Claim-to-route latency, {args.n} blocks claimed on node A (ms)")
        print(f"{'series':<24} {'p50':>8} {'p95':>8} {'max':>8}")
        for name, samples in results.items():
            print(f"{name:<24} {pct(samples, 0.5):8.1f} {pct(samples, 0.95):8.1f} {max(samples):8.1f}")
        print()

    print(f"Render time, {args.nodes} nodes (median ms)")
    print(f"{'layout':<34} {'sessions':>8} {'render':>9} {'bytes':>8} {'bird -p':>8}")
    for label, sessions, ms, size, parse in render_bench(args.nodes):
        parse_text = f"{parse:8.1f}" if parse is not None else f"{'':>8}"
        size_text = f"{size:8d}" if size else f"{'':>8}"
        print(f"{label:<34} {sessions:8d} {ms:9.1f} {size_text} {parse_text}")


if __name__ == "__main__":
    main()
