"""Typha benchmark: N simulated Felix clients direct to etcd vs through one Typha.

For each mode: the datastore load observed at etcd (watchers, Range requests,
all gRPC requests, bytes sent to clients) while the clients start and sync, and
during a steady window of updates; and the time until every client holds the
full snapshot of E WorkloadEndpoints.

    .venv/bin/python bench/typha_bench.py [--clients 200] [--endpoints 10000]

``--failover``: two Typhas, N clients given both addresses (``TyphaAddr=a,b``);
the Typha they are on is SIGKILLed, and each client's time from the kill until it
is in sync again through the other one is measured (p50/p95/max), over several
rounds (the killed Typha is restarted, then the other one is killed).

    .venv/bin/python bench/typha_bench.py --failover [--clients 50] [--endpoints 1000] [--rounds 5]

The clients all live in this process (threads), so their JSON decoding shares
two cores with etcd and Typha: the times are upper bounds.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datastore.etcd import EtcdBackend  # noqa: E402
from datastore.keys import ListOptions  # noqa: E402
from datastore.syncer import SyncStatus, Syncer, Update  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402
from tests.typha.support import TyphaProcess, wep  # noqa: E402
from typha.client import TyphaSyncer  # noqa: E402
from typha.main import FELIX_KINDS  # noqa: E402


def etcd_metrics(endpoint: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{endpoint}/metrics", timeout=5).read().decode()
    out = {"watchers": 0.0, "watch_streams": 0.0, "ranges": 0.0, "grpc": 0.0, "bytes": 0.0}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name == "etcd_debugging_mvcc_watcher_total":
            out["watchers"] = float(value)
        elif name == "etcd_debugging_mvcc_watch_stream_total":
            out["watch_streams"] = float(value)
        elif name == "etcd_mvcc_range_total":
            out["ranges"] = float(value)
        elif name.startswith("grpc_server_started_total"):
            out["grpc"] += float(value)
        elif name == "etcd_network_client_grpc_sent_bytes_total":
            out["bytes"] = float(value)
    return out


class RetryCounter(logging.Handler):
    """Counts the syncers' "datastore unavailable, retrying" warnings (timeouts under load)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


RETRIES = RetryCounter()
_syncer_log = logging.getLogger("datastore.syncer")
_syncer_log.addHandler(RETRIES)
_syncer_log.propagate = False
_client_log = logging.getLogger("typha.client")
_client_log.addHandler(RETRIES)
_client_log.propagate = False


class Counter:
    """A simulated Felix's consumer: counts keys, keeps no values."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.in_sync = False
        self.updates = 0

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            self.updates += 1
            if u.value is None:
                self.keys.discard(u.key.path)
            else:
                self.keys.add(u.key.path)

    def on_status(self, status: SyncStatus) -> None:
        self.in_sync = status == SyncStatus.IN_SYNC


def populate(endpoint: str, n: int) -> None:
    backend = EtcdBackend(endpoint)

    def put(i: int) -> None:
        backend.apply(*wep(f"ns-{i % 50}", f"pod-{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    backend.close()


def run_mode(name: str, endpoint: str, n_clients: int, n_endpoints: int,
             make: Callable[[Counter, int], Any], steady_updates: int) -> dict[str, Any]:
    gc.collect()
    before = etcd_metrics(endpoint)
    retries0 = RETRIES.count
    counters = [Counter() for _ in range(n_clients)]
    t0 = time.monotonic()
    clients = [make(c, i) for i, c in enumerate(counters)]
    while not all(c.in_sync and len(c.keys) >= n_endpoints for c in counters):
        if time.monotonic() - t0 > 600:
            raise RuntimeError(f"{name}: clients not in sync after 600 s")
        time.sleep(0.05)
    sync_time = time.monotonic() - t0
    synced = etcd_metrics(endpoint)
    # Steady state: a stream of updates; every client must see each.
    backend = EtcdBackend(endpoint)
    base = [c.updates for c in counters]
    t1 = time.monotonic()
    for i in range(steady_updates):
        backend.apply(*wep("ns-0", f"pod-{i * 50}", "10.250.0.1", extra=str(i)))
        time.sleep(0.05)
    while not all(c.updates - b >= steady_updates for c, b in zip(counters, base)):
        time.sleep(0.02)
    window = time.monotonic() - t1
    steady = etcd_metrics(endpoint)
    backend.close()
    for c in clients:
        c.stop()
    return {
        "mode": name,
        "sync_s": sync_time,
        "retries": RETRIES.count - retries0,
        "watchers": synced["watchers"],
        "sync_ranges": synced["ranges"] - before["ranges"],
        "sync_grpc": synced["grpc"] - before["grpc"],
        "sync_mb": (synced["bytes"] - before["bytes"]) / 1e6,
        "steady_grpc_per_s": (steady["grpc"] - synced["grpc"]) / window,
        "steady_kb_per_s": (steady["bytes"] - synced["bytes"]) / window / 1e3,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Resyncer(Counter):
    """Notes when it is back in sync after a connection loss."""

    def __init__(self) -> None:
        super().__init__()
        self.synced_at = 0.0

    def on_status(self, status: SyncStatus) -> None:
        super().on_status(status)
        if status == SyncStatus.IN_SYNC:
            self.synced_at = time.monotonic()


def failover(args: argparse.Namespace) -> None:
    samples: list[float] = []
    rounds: list[float] = []
    with EtcdServer() as etcd:
        populate(etcd.endpoint, args.endpoints)
        typhas = [TyphaProcess(etcd.endpoint, TYPHA_LOGSEVERITYSCREEN="WARNING").start() for _ in range(2)]
        addrs = ",".join(t.addr for t in typhas)
        counters = [Resyncer() for _ in range(args.clients)]
        clients = [TyphaSyncer(addrs, f"node-{i}", c.on_updates, c.on_status).start()
                   for i, c in enumerate(counters)]
        try:
            while not all(c.in_sync and len(c.keys) >= args.endpoints for c in counters):
                time.sleep(0.05)
            for r in range(args.rounds):
                on = {cl.addr for cl in clients}
                victim = next(t for t in typhas if t.addr in on)
                assert len(on) == 1, on
                before = [cl.resyncs for cl in clients]
                t0 = time.monotonic()
                victim.kill()
                while not all(cl.resyncs > b and c.in_sync for cl, b, c in zip(clients, before, counters)):
                    if time.monotonic() - t0 > 120:
                        raise RuntimeError("clients did not resync within 120 s")
                    time.sleep(0.002)
                times = [c.synced_at - t0 for c in counters]
                samples += times
                rounds.append(max(times))
                assert all(len(c.keys) >= args.endpoints for c in counters)
                print(f"round {r + 1}: all {args.clients} resynced through {clients[0].addr} "
                      f"in {max(times) * 1000:.0f} ms", file=sys.stderr)
                victim.start()
        finally:
            for cl in clients:
                cl.stop()
            for t in typhas:
                t.cleanup()
    print(f"\nTypha fail-over: {args.clients} clients, {args.endpoints} WorkloadEndpoints in the snapshot, "
          f"{args.rounds} kills, {os.cpu_count()} CPUs")
    print("| kill -> client in sync via the other Typha | p50 | p95 | max |")
    print("|---|---|---|---|")
    print(f"| per client (n={len(samples)}) | {percentile(samples, 0.5) * 1000:.0f} ms | "
          f"{percentile(samples, 0.95) * 1000:.0f} ms | {max(samples) * 1000:.0f} ms |")
    print(f"| last client of a round (n={len(rounds)}) | {percentile(rounds, 0.5) * 1000:.0f} ms | "
          f"{percentile(rounds, 0.95) * 1000:.0f} ms | {max(rounds) * 1000:.0f} ms |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--endpoints", type=int, default=None)
    ap.add_argument("--steady-updates", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=300.0, help="etcd request timeout, direct mode")
    ap.add_argument("--failover", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.failover:
        args.clients = args.clients or 50
        args.endpoints = args.endpoints or 1000
        failover(args)
        return
    args.clients = args.clients or 200
    args.endpoints = args.endpoints or 10000
    results = []
    with EtcdServer() as etcd:
        t = time.monotonic()
        populate(etcd.endpoint, args.endpoints)
        print(f"populated {args.endpoints} WorkloadEndpoints in {time.monotonic() - t:.1f} s", file=sys.stderr)
        opts = [ListOptions(k) for k in FELIX_KINDS]

        def direct(c: Counter, i: int) -> Any:
            # A generous request timeout: with the default 5 s, 200 simultaneous full
            # lists time out and retry for ever on 2 cores.
            syncer = Syncer(EtcdBackend(etcd.endpoint, timeout=args.timeout), opts, c.on_updates, c.on_status)
            return syncer.start()

        results.append(run_mode("direct (1 syncer/Felix)", etcd.endpoint, args.clients, args.endpoints,
                                direct, args.steady_updates))
        typha = TyphaProcess(etcd.endpoint, TYPHA_LOGSEVERITYSCREEN="WARNING")
        before = etcd_metrics(etcd.endpoint)
        t = time.monotonic()
        typha.start()
        typha_ready = time.monotonic() - t
        typha_own = etcd_metrics(etcd.endpoint)
        try:
            def via_typha(c: Counter, i: int) -> Any:
                return TyphaSyncer(typha.addr, f"node-{i}", c.on_updates, c.on_status).start()

            res = run_mode("through 1 Typha", etcd.endpoint, args.clients, args.endpoints,
                           via_typha, args.steady_updates)
            res["typha_ready_s"] = typha_ready
            res["typha_own_ranges"] = typha_own["ranges"] - before["ranges"]
            res["typha_own_mb"] = (typha_own["bytes"] - before["bytes"]) / 1e6
            results.append(res)
        finally:
            typha.cleanup()

    print(f"\nTypha bench: {args.clients} simulated Felix clients, {args.endpoints} WorkloadEndpoints, "
          f"{args.steady_updates} steady-state updates, {os.cpu_count()} CPUs")
    cols = [("mode", "mode", "{}"), ("time to full snapshot at all clients (s)", "sync_s", "{:.2f}"),
            ("client timeouts/retries", "retries", "{:.0f}"), ("etcd watchers", "watchers", "{:.0f}"), ("etcd Range reqs during sync", "sync_ranges", "{:.0f}"),
            ("etcd gRPC reqs during sync", "sync_grpc", "{:.0f}"), ("MB etcd sent during sync", "sync_mb", "{:.1f}"),
            ("steady etcd gRPC req/s (incl. the writer)", "steady_grpc_per_s", "{:.1f}"),
            ("steady etcd kB/s sent", "steady_kb_per_s", "{:.1f}")]
    print("| " + " | ".join(c[0] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(fmt.format(r[key]) for _, key, fmt in cols) + " |")
    typha_row = results[-1]
    print(f"\nTypha itself, before its clients started: ready in {typha_row['typha_ready_s']:.2f} s "
          f"(process start + {typha_row['typha_own_ranges']:.0f} Range requests, "
          f"{typha_row['typha_own_mb']:.1f} MB from etcd, then 1 watch).")


if __name__ == "__main__":
    main()
