"""IPAM allocation throughput: calico-ipam (on etcd) against the Go reference
host-local, both exec'd the same way in the same run.

    .venv/bin/python bench/ipam_bench.py [-n 50] [--per-caller 5] [--frozen-dir DIST]

Scenarios (each plugin from a clean state):
  sequential      n ADDs one after another on one node, then n DELs
  20 callers      20 concurrent callers on one node, --per-caller ADDs each
  4 nodes x 5     4 simulated nodes (own nodename + lock file; host-local: own
                  dataDir and subnet), 5 concurrent callers each

Prints p50/p95 latency per operation, operations per second (wall clock of
the whole scenario), CPU time per operation of the exec'd plugin processes
(independent of other load on the machine) and the calico/host-local
ratios. Starts its own etcd.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.cni_exec import exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Series:
    scenario: str
    plugin: str
    op: str
    latencies: list[float]  # ms
    wall: float  # s
    cpu: float  # s of CPU used by the exec'd plugins (user + system)

    @property
    def ops_per_s(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


class Plugin:
    name: str

    def conf(self, node: int) -> dict[str, Any]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


class CalicoIPAM(Plugin):
    name = "calico-ipam"

    def __init__(self, endpoint: str, tmp: str) -> None:
        from datastore.etcd import EtcdBackend
        from tests.support.pools import create_pool

        self.endpoint = endpoint
        self.tmp = tmp
        self.backend = EtcdBackend(endpoint)
        create_pool(self.backend, "bench-pool", "10.70.0.0/16")

    def conf(self, node: int) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
            "etcd_endpoints": self.endpoint, "nodename": f"bench-node-{node}",
            "ipam_lock_file": os.path.join(self.tmp, f"lock-{node}", "ipam.lock"),
            "log_file_path": os.path.join(self.tmp, "calico-ipam.log"), "log_level": "warning",
            "ipam": {"type": "calico-ipam"},
        }

    def reset(self) -> None:
        # Drop every IPAM object (blocks, affinities, handles): a clean start.
        self.backend._post("/kv/deleterange", {"key": "L2NhbGljby9pcGFtLw==",  # /calico/ipam/
                                                "range_end": "L2NhbGljby9pcGFtMA=="})  # /calico/ipam0


class HostLocal(Plugin):
    name = "host-local"

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.generation = 0

    def conf(self, node: int) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0", "name": "bench-net", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": f"10.{80 + node}.0.0/16",
                     "dataDir": os.path.join(self.tmp, f"hl-{self.generation}-node-{node}")},
        }

    def reset(self) -> None:
        self.generation += 1


def run_ops(cni_path: str, binary: str, command: str, jobs: list[tuple[dict[str, Any], str]],
            callers: int) -> tuple[list[float], float, float]:
    """Run ``jobs`` (conf, container id) with ``callers`` concurrent callers;
    returns latencies (ms), wall time (s) and the children's CPU time (s)."""
    latencies: list[float] = []

    def one(job: tuple[dict[str, Any], str]) -> None:
        conf, cid = job
        start = time.perf_counter()
        result = exec_plugin(cni_path, binary, command, conf, container_id=cid,
                             netns="/var/run/netns/bench" if command == "ADD" else "")
        latencies.append((time.perf_counter() - start) * 1000)
        if not result.ok:
            raise SystemExit(f"{binary} {command} {cid} failed: {result.stdout} {result.stderr[-400:]}")

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if callers == 1:
        for job in jobs:
            one(job)
    else:
        with ThreadPoolExecutor(max_workers=callers) as pool:
            list(pool.map(one, jobs))
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return latencies, wall, usage.ru_utime + usage.ru_stime - cpu_before


def scenarios(n: int, per_caller: int) -> list[tuple[str, int, Callable[[int], list[tuple[int, str]]]]]:
    """(name, concurrent callers, jobs) with jobs as (node, container id)."""
    return [
        ("sequential", 1, lambda _: [(0, f"seq{i}") for i in range(n)]),
        ("20 callers, 1 node", 20, lambda _: [(0, f"one{i}") for i in range(20 * per_caller)]),
        ("20 callers, 4 nodes", 20, lambda _: [(i % 4, f"four{i}") for i in range(20 * per_caller)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="sequential ADDs (and DELs)")
    parser.add_argument("--per-caller", type=int, default=5, help="ADDs per concurrent caller")
    parser.add_argument("--frozen-dir", help="directory holding frozen calico/calico-ipam executables")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="pycalico-ipam-bench-")
    cni_path = make_cni_path(os.path.join(tmp, "bin"), args.frozen_dir)
    if not os.path.exists(os.path.join(cni_path, "host-local")):
        raise SystemExit("host-local not found: run scripts/build-go-peers (or install containernetworking-plugins)")
    results: list[Series] = []
    try:
        with EtcdServer() as etcd:
            plugins: list[Plugin] = [HostLocal(tmp), CalicoIPAM(etcd.endpoint, tmp)]
            for name, callers, make_jobs in scenarios(args.n, args.per_caller):
                for plugin in plugins:
                    plugin.reset()
                    jobs = [(plugin.conf(node), cid) for node, cid in make_jobs(0)]
                    results.append(Series(name, plugin.name, "ADD", *run_ops(cni_path, plugin.name, "ADD", jobs, callers)))
                    if name == "sequential":
                        results.append(Series(name, plugin.name, "DEL", *run_ops(cni_path, plugin.name, "DEL", jobs, callers)))
                    print(f"  done: {name} / {plugin.name}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)


def print_table(results: list[Series]) -> None:
    print("| scenario | op | plugin | n | p50 ms | p95 ms | ops/s | CPU ms/op | p50 ratio | ops/s ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ref = {(s.scenario, s.op): s for s in results if s.plugin == "host-local"}
    for s in results:
        base = ref.get((s.scenario, s.op))
        p50 = pct(s.latencies, 0.5)
        ratio = ratio_ops = "1.00"
        if base is not None and s is not base:
            ratio = f"{p50 / pct(base.latencies, 0.5):.2f}"
            ratio_ops = f"{s.ops_per_s / base.ops_per_s:.2f}"
        print(f"| {s.scenario} | {s.op} | {s.plugin} | {len(s.latencies)} | {p50:.1f} | "
              f"{pct(s.latencies, 0.95):.1f} | {s.ops_per_s:.1f} | {1000 * s.cpu / len(s.latencies):.0f} | "
              f"{ratio} | {ratio_ops} |")
    load = os.getloadavg()
    print(f"\n(load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
