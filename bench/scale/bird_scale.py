"""confd/BIRD at scale: render cost of a big mesh, and BGP convergence with route reflectors.

    .venv/bin/python bench/scale/bird_scale.py [--render-nodes 500] [--nodes 50] [-n 10]

1. Render: a ``--render-nodes`` cluster as a full node-to-node mesh versus
   two route reflectors (mesh off): sessions, render time and config size
   per node and for the whole cluster, BIRD's parse time of the file.
2. Convergence: ``--nodes`` simulated nodes (network namespaces on one
   bridge, tests/support/nodes.py), each running calico-confd + BIRD 2, two
   of them route reflectors (``routeReflectorClusterID`` + label, one BGPPeer
   ``all() -> route-reflector == 'true'``, mesh disabled). A block is claimed
   for one node (confirmed BlockAffinity, as calico-ipam writes it) and the
   time until its route is in every other node's kernel is measured (``ip
   monitor route`` in each node), ``-n`` times. Also reported: start-up
   (confd + BIRD in every node until every client has both RR sessions) and
   the memory of the confd and BIRD processes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bird_bench import RouteMonitor, pct, render_bench  # noqa: E402

RR_CLUSTER_ID = "244.0.0.1"


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def convergence_bench(n_nodes: int, n_claims: int) -> None:
    from tests.support.nodes import Cluster, wait_for

    with Cluster() as cluster:
        cluster.create_pool("10.96.0.0/12")
        cluster.apply_resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})
        cluster.apply_resource("BGPPeer", "peer-with-rrs", {"nodeSelector": "all()",
                                                            "peerSelector": "route-reflector == 'true'"})
        t0 = time.perf_counter()
        nodes = []
        for i in range(n_nodes):
            rr = i < 2
            nodes.append(cluster.add_node(f"node-{i:03d}", rr_cluster_id=RR_CLUSTER_ID if rr else None,
                                          labels={"route-reflector": "true"} if rr else None))
        t_netns = time.perf_counter()
        for node in nodes:
            node.start_confd()
        rrs, clients = nodes[:2], nodes[2:]
        rr_ips = {rr.ip for rr in rrs}

        def all_established() -> bool:
            return all(rr_ips - {c.ip} <= c.established() for c in nodes)

        wait_for(all_established, timeout=600, interval=1.0, what="every node established with both RRs")
        t_up = time.perf_counter()
        confd_mb = [rss_mb(n.confd.pid) for n in nodes if n.confd]
        bird_mb = [rss_mb(n.bird_pid() or 0) for n in nodes]
        print(f"## Convergence: {n_nodes} nodes, 2 route reflectors, mesh off")
        print(f"namespaces + Node resources: {t_netns - t0:.1f} s; confd+BIRD start until all "
              f"{2 * len(clients) + 1} sessions established: {t_up - t_netns:.1f} s")
        print(f"memory per node: confd RSS median {statistics.median(confd_mb):.0f} MiB, "
              f"BIRD RSS median {statistics.median(bird_mb):.1f} MiB (RR: "
              f"{max(rss_mb(rrs[0].bird_pid() or 0), rss_mb(rrs[1].bird_pid() or 0)):.1f} MiB)")

        monitors = {n.name: RouteMonitor(n.netns) for n in nodes}
        time.sleep(0.5)
        last_all: list[float] = []
        median_node: list[float] = []
        try:
            for i in range(n_claims):
                owner = clients[i % len(clients)]
                cidr = f"10.{100 + i // 256}.{i % 256}.0/26"
                start = time.perf_counter()
                cluster.claim_block(owner.name, cidr)
                arrivals = [(monitors[n.name].wait(cidr, timeout=120) - start) * 1000
                            for n in nodes if n is not owner]
                last_all.append(max(arrivals))
                median_node.append(statistics.median(arrivals))
                time.sleep(0.3)
        finally:
            for m in monitors.values():
                m.close()
        print()
        print(f"Block claimed on a client -> route in the other {n_nodes - 1} nodes' kernels, {n_claims} claims (ms)")
        print("| series | p50 | p95 | max |")
        print("|---|---|---|---|")
        for label, samples in (("median node", median_node), ("last node (converged)", last_all)):
            print(f"| {label} | {pct(samples, 0.5):.0f} | {pct(samples, 0.95):.0f} | {max(samples):.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render-nodes", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("-n", type=int, default=10, help="blocks claimed (convergence)")
    ap.add_argument("--skip-convergence", action="store_true")
    args = ap.parse_args()

    print(f"## Render, {args.render_nodes} nodes (median ms)")
    print("| layout | sessions | render ms | bytes | bird -p ms |")
    print("|---|---|---|---|---|")
    for label, sessions, ms, size, parse in render_bench(args.render_nodes):
        print(f"| {label} | {sessions} | {ms:.1f} | {size or ''} | {'' if parse is None else f'{parse:.1f}'} |")
    print()
    if not args.skip_convergence:
        convergence_bench(args.nodes, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
