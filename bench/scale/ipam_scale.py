"""IPAM at scale: many nodes start at once and fill up with pods, concurrently.

    .venv/bin/python bench/scale/ipam_scale.py [--nodes 200] [--pods 110]
        [--datastore etcd|kubernetes] [--workers 200]

``--nodes`` node identities each allocate ``--pods`` addresses (one per pod,
one handle each, as calico-ipam's ADD does) one after another, all nodes at
the same time (a thread per node, each with its own datastore client: the
"40 nodes boot at once" affinity race, scaled up), from one /16 pool with
/26 blocks. Then every address is released by handle, concurrently again.

Reported: allocations that failed (must be 0), CAS conflicts and other
datastore errors the allocator retried through (counted at the datastore
client), blocks per node, addresses held twice (must be 0), allocation
latency p50/p99, wall time until all are allocated, then release time and
what is left (blocks with allocations, handles: must be 0).

The allocator runs in-process (the calico-ipam code without the exec): the
point is the datastore contention, not the interpreter start-up that
bench/exec_latency.py measures. Starts its own etcd (or kube-apiserver).
"""
from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass, field
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound  # noqa: E402
from datastore.keys import ListOptions, ResourceKey  # noqa: E402

POOL = "10.128.0.0/14"
LOCK = threading.Lock()
ERRORS: collections.Counter[str] = collections.Counter()


class CountingBackend:
    """Delegates to a real backend, counting the errors each call raised
    (a Conflict/AlreadyExists is one lost compare-and-swap race)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except (Conflict, AlreadyExists):
                with LOCK:
                    ERRORS["cas conflict"] += 1
                raise
            except NotFound:
                raise  # a normal "does it exist yet" read, not an error
            except DatastoreError as exc:
                with LOCK:
                    ERRORS[type(exc).__name__] += 1
                raise

        return call


@dataclass
class Part:
    """What one client process did."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    handles: dict[str, list[str]] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


def allocate_nodes(make_backend: Callable[..., Any], nodes: list[int], pods: int, timeout: float) -> Part:
    """In a client process: every node of ``nodes`` (a thread each, own
    datastore client) allocates ``pods`` addresses one after another."""
    from ipam.allocator import Allocator

    part = Part()

    def node_work(i: int) -> None:
        node = f"scale-node-{i:04d}"
        allocator = Allocator(CountingBackend(make_backend(timeout=timeout)), node)  # type: ignore[arg-type]
        pools = allocator.preload()
        mine: list[str] = []
        for p in range(pods):
            handle = f"k8s-pod-network.{uuid.uuid4().hex}"
            start = time.perf_counter()
            try:
                allocator.restart_deadline()
                got = allocator.auto_assign(4, handle, {"node": node, "pod": f"pod-{p}", "namespace": "default"},
                                            pools=pools)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with LOCK:
                    part.failures.append(f"{node}: {type(exc).__name__}: {exc}")
                continue
            with LOCK:
                part.latencies.append((time.perf_counter() - start) * 1000)
                part.addresses += [a.address for a in got]
            mine.append(handle)
        with LOCK:
            part.handles[node] = mine

    with ThreadPoolExecutor(len(nodes) or 1) as pool:
        list(pool.map(node_work, nodes))
    part.errors = collections.Counter(ERRORS)
    return part


def release_nodes(make_backend: Callable[..., Any], held: dict[str, list[str]], timeout: float) -> Part:
    """In a client process: release every handle, a thread per node."""
    from ipam.release import release_by_handle
    from ipam.retry import Deadline
    from ipam.store import Store

    part = Part()

    def release_node(node: str) -> None:
        store = Store(CountingBackend(make_backend(timeout=timeout)))  # type: ignore[arg-type]
        for handle in held[node]:
            try:
                release_by_handle(store, handle, Deadline(90))
            except Exception as exc:  # noqa: BLE001
                with LOCK:
                    part.failures.append(f"release {handle}: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(len(held) or 1) as pool:
        list(pool.map(release_node, held))
    part.errors = collections.Counter(ERRORS)
    return part


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--datastore", choices=("etcd", "kubernetes"), default="etcd")
    ap.add_argument("--procs", type=int, default=8, help="client processes (each runs its nodes as threads)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="datastore request timeout, s (the simulated nodes share 2 cores: a request "
                         "waits for CPU, not only for the datastore)")
    args = ap.parse_args()

    server: Any
    make_backend: Callable[[], Any]
    if args.datastore == "etcd":
        from datastore.etcd import EtcdBackend
        from tests.support.etcd_server import EtcdServer

        server = EtcdServer().start()
        make_backend = functools.partial(EtcdBackend, server.endpoint)
    else:
        from datastore.kubernetes import KubernetesBackend
        from tests.support.kube_apiserver import KubeApiServer

        # Audit in batch mode, as production clusters run it (the test default, blocking,
        # makes every write wait for the audit file).
        server = KubeApiServer(extra_args=["--audit-log-mode=batch"]).start()
        server.install_crds()
        make_backend = functools.partial(KubernetesBackend, kubeconfig=server.kubeconfig)

    try:
        admin = make_backend()
        admin.apply(ResourceKey("IPPool", "scale-pool"), {
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "scale-pool"},
            "spec": {"cidr": POOL, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never"},
        })
        ctx = multiprocessing.get_context("fork")
        chunks = [list(range(i, args.nodes, args.procs)) for i in range(args.procs)]
        t0 = time.perf_counter()
        with ctx.Pool(args.procs) as pool:
            parts = pool.starmap(allocate_nodes, [(make_backend, c, args.pods, args.timeout) for c in chunks])
        alloc_wall = time.perf_counter() - t0
        latencies = [x for part in parts for x in part.latencies]
        failures = [x for part in parts for x in part.failures]
        held = {node: handles for part in parts for node, handles in part.handles.items()}
        addresses: collections.Counter[str] = collections.Counter(a for part in parts for a in part.addresses)
        alloc_errors = sum((part.errors for part in parts), collections.Counter())

        affinities = admin.list(ListOptions("BlockAffinity")).items
        per_node = collections.Counter(kv.key.host for kv in affinities)
        duplicates = sum(1 for n in addresses.values() if n > 1)

        node_chunks = [sorted(held)[i::args.procs] for i in range(args.procs)]
        t1 = time.perf_counter()
        with ctx.Pool(args.procs) as pool:
            rparts = pool.starmap(release_nodes, [(make_backend, {n: held[n] for n in c}, args.timeout)
                                                  for c in node_chunks])
        release_wall = time.perf_counter() - t1
        failures += [x for part in rparts for x in part.failures]
        release_errors = sum((part.errors for part in rparts), collections.Counter())

        blocks = admin.list(ListOptions("Block")).items
        used_blocks = [kv for kv in blocks if any(a is not None for a in (kv.value or {}).get("allocations", []))]
        handles = admin.list(ListOptions("IPAMHandle")).items

        total = args.nodes * args.pods
        print(f"# IPAM scale: {args.nodes} nodes x {args.pods} pods = {total} allocations, "
              f"datastore {args.datastore}, {args.procs} processes, request timeout {args.timeout:g} s")
        print()
        print("| metric | value |")
        print("|---|---|")
        print(f"| allocated | {len(latencies)} / {total} |")
        print(f"| failures (must be 0) | {len(failures)} |")
        print(f"| addresses held twice (must be 0) | {duplicates} |")
        print(f"| CAS conflicts retried (allocation) | {alloc_errors.get('cas conflict', 0)} |")
        other = {k: v for k, v in alloc_errors.items() if k != 'cas conflict'}
        print(f"| other datastore errors (allocation) | {other or 0} |")
        print(f"| blocks claimed | {len(affinities)} (per node min/median/max "
              f"{min(per_node.values(), default=0)}/{sorted(per_node.values())[len(per_node) // 2] if per_node else 0}/"
              f"{max(per_node.values(), default=0)}) |")
        print(f"| allocation latency p50 / p99 / max ms | {pct(latencies, 0.5):.1f} / {pct(latencies, 0.99):.1f} / "
              f"{max(latencies, default=0):.1f} |")
        print(f"| time until all allocated | {alloc_wall:.1f} s ({len(latencies) / alloc_wall:.0f} allocations/s) |")
        print(f"| release time | {release_wall:.1f} s; CAS conflicts {release_errors.get('cas conflict', 0)} |")
        print(f"| left after release: blocks with allocations / handles (must be 0) | "
              f"{len(used_blocks)} / {len(handles)} |")
        for line in failures[:10]:
            print(f"failure: {line}")
        return 0 if not failures and not duplicates and not used_blocks and not handles else 1
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
