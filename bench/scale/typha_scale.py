"""Typha at scale: 1,000 lightweight clients against one Typha, then five.

    .venv/bin/python bench/scale/typha_scale.py [--clients 1000] [--endpoints 5000]
        [--updates 20] [--procs 2] [--typhas 5] [--nodes 1000]

The clients are raw protocol clients (hello, then frames counted, not
decoded, except small ones: status, pings answered, updates timestamped), run
as ``--procs`` processes of one selector loop each, so 1,000 of them fit on
this machine; a real Felix does more work per update, which is Felix's cost,
not Typha's. The datastore holds ``--endpoints`` WorkloadEndpoints.

Reported: Typha start-up to ready, time until every client is in sync
(snapshot delivered) with per-client p50/p99, snapshot bytes per client,
update fan-out latency (etcd write -> frame read by the client) p50/p99 over
every client and ``--updates`` updates, Typha's RSS growth per client, and
the etcd watchers held (one per resource type, not per client).

Then rebalancing: ``--typhas`` Typhas on a real kube-apiserver holding
``--nodes`` Nodes, in kubernetes rebalancing mode behind one Service; every
client starts on the first, the others then join the Service, and the first
sheds down to upstream's per-Typha target while the dropped clients reconnect
to a random Typha. Reported: final connections per Typha, connections shed,
time until every Typha is at or under its target with every client in sync.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import selectors
import socket
import statistics
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

HEADER = struct.Struct(">I")
SMALL_FRAME = 4096  # frames up to this size are decoded (status, ping, single updates)
MARK_NS = "scale-mark"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


class LightClient:
    def __init__(self, addr: tuple[str, int], node: str) -> None:
        from typha import proto

        self.sock = socket.create_connection(addr, timeout=30)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.started = time.time()
        self.synced_at: float | None = None
        self.bytes = 0
        self.arrivals: dict[str, float] = {}  # mark name -> arrival time
        self.closed = False
        hello = {"type": "hello", "node": node, "version": proto.PROTOCOL_VERSION, "syncerType": "felix"}
        self.send(hello)

    def send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg, separators=(",", ":")).encode()
        self.sock.setblocking(True)
        self.sock.sendall(HEADER.pack(len(body)) + body)
        self.sock.setblocking(False)

    def readable(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        now = time.time()
        self.bytes += len(data)
        self.buf += data
        while len(self.buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buf)
            end = HEADER.size + length
            if len(self.buf) < end:
                break
            if length <= SMALL_FRAME:
                self.small(json.loads(bytes(self.buf[HEADER.size:end])), now)
            del self.buf[:end]

    def small(self, msg: dict[str, Any], now: float) -> None:
        kind = msg.get("type")
        if kind == "status" and msg.get("status") == "in-sync" and self.synced_at is None:
            self.synced_at = now
        elif kind == "ping":
            self.send({"type": "pong", "ts": msg.get("ts")})
        elif kind == "kvs" and self.synced_at is not None:
            for kv in msg.get("kvs", ()):
                if f"/{MARK_NS}/" in kv.get("k", ""):
                    self.arrivals.setdefault(kv["k"].rsplit("/", 1)[-1], now)


def client_proc(addr: tuple[str, int], first: int, count: int, conn: Any) -> None:
    """One process: ``count`` clients in one selector loop; reports to ``conn``.
    After ``("addrs", [...])`` a client the server drops reconnects to a random
    one of those addresses (as a Felix that re-reads the Service would)."""
    sel = selectors.DefaultSelector()
    clients = []
    addrs: list[tuple[str, int]] = []
    reconnects = 0
    for i in range(first, first + count):
        c = LightClient(addr, f"node-{i}")
        sel.register(c.sock, selectors.EVENT_READ, c)
        clients.append(c)
    conn.send(("connected", count))
    pending: list[int] = []  # clients to reconnect (indexes)
    while True:
        for key, _ in sel.select(timeout=0.1):
            client: LightClient = key.data
            client.readable()
            if client.closed:
                sel.unregister(client.sock)
                client.sock.close()
                pending.append(clients.index(client))
        if addrs:
            retry = []
            for index in pending:
                try:
                    fresh = LightClient(random.choice(addrs), f"node-{first + index}")
                except OSError:  # refused or closed at once (that Typha is full): next round
                    retry.append(index)
                    continue
                sel.register(fresh.sock, selectors.EVENT_READ, fresh)
                clients[index] = fresh
                reconnects += 1
            pending = retry
        if conn.poll():
            cmd = conn.recv()
            if isinstance(cmd, tuple) and cmd[0] == "addrs":
                addrs = list(cmd[1])
            elif cmd == "status":
                conn.send(("status", sum(1 for c in clients if c.synced_at), sum(1 for c in clients if c.closed),
                           reconnects))
            elif cmd == "report":
                conn.send(("report", [(c.synced_at - c.started if c.synced_at else None, c.bytes, c.arrivals)
                                      for c in clients]))
                return


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_clients(addr: tuple[str, int], n_clients: int, n_procs: int) -> tuple[list[Any], list[Any]]:
    per = -(-n_clients // n_procs)
    pipes, procs = [], []
    for p in range(n_procs):
        count = min(per, n_clients - p * per)
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=client_proc, args=(addr, p * per, count, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for parent in pipes:
        parent.recv()
    return pipes, procs


def clients_status(pipes: list[Any]) -> tuple[int, int, int]:
    """(in sync, disconnected, reconnects) over every client process."""
    synced = closed = reconnects = 0
    for parent in pipes:
        parent.send("status")
        _, n, c, r = parent.recv()
        synced, closed, reconnects = synced + n, closed + c, reconnects + r
    return synced, closed, reconnects


def rebalance_bench(n_clients: int, n_typhas: int, n_nodes: int, n_procs: int, drop_interval: float,
                    lower_limit: int) -> None:
    """``n_typhas`` Typhas (kubernetes rebalancing, real kube-apiserver with
    ``n_nodes`` Nodes): every client starts on the first one, then the others
    start and join the Service."""
    from datastore.kubernetes.endpoints import count_nodes  # noqa: F401 - the Typhas count the same way
    from tests.support.kube_apiserver import KubeApiServer
    from tests.typha.support import HostAddress, TyphaService, kdd_typha, wait_for
    from typha.config import rebalance_target

    host = HostAddress()
    with KubeApiServer() as kube:
        kube.install_crds()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: kube.must("POST", "/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": f"scale-node-{i:04d}"}}), range(n_nodes)))
        progress(f"{n_nodes} Nodes created")
        svc = TyphaService(kube, "calico-typha-scale").create()
        env = {"TYPHA_CONNECTIONREBALANCINGMODE": "kubernetes", "TYPHA_K8SSERVICENAME": svc.name,
               "TYPHA_K8SNAMESPACE": svc.namespace, "TYPHA_K8SSERVICEPOLLINTERVALSECS": "1",
               "TYPHA_CONNECTIONDROPINTERVALSECS": str(drop_interval),
               "TYPHA_MAXCONNECTIONSLOWERLIMIT": str(lower_limit),
               "TYPHA_LOGSEVERITYSCREEN": "WARNING"}
        typhas = [kdd_typha(kube, host.ip, **env) for _ in range(n_typhas)]
        procs: list[Any] = []
        try:
            first = typhas[0].start()
            svc.add_typha("0", first)
            h, _, port = first.addr.rpartition(":")
            pipes, procs = start_clients((h, int(port)), n_clients, n_procs)
            progress("clients connected to the first Typha")
            wait_for(lambda: clients_status(pipes)[0] >= n_clients, 600, 0.5, "every client in sync")
            progress("clients in sync; starting the other Typhas")
            addrs = []
            for i, t in enumerate(typhas[1:], 1):
                t.start()
                svc.add_typha(str(i), t)
            for t in typhas:
                h, _, port = t.addr.rpartition(":")
                addrs.append((h, int(port)))
            for parent in pipes:
                parent.send(("addrs", addrs))
            t0 = time.monotonic()
            target = rebalance_target(lower_limit, 10000, 2, n_nodes, n_typhas)

            def active() -> list[int]:
                return [int(t.metric("typha_connections_active")) for t in typhas]

            def settled() -> bool:
                counts = active()
                return max(counts) <= target and sum(counts) == n_clients and clients_status(pipes)[0] >= n_clients

            wait_for(settled, 600, 1.0, f"every Typha at or under its target {target}")
            took = time.monotonic() - t0
            final = active()
            shed = int(typhas[0].metric('typha_connections_dropped{reason="shed"}'))
            reconnects = clients_status(pipes)[2]
            for parent in pipes:
                parent.send("report")
                parent.recv()
        finally:
            for proc in procs:
                proc.join(10)
            for t in typhas:
                t.cleanup()
            svc.cleanup()
            host.cleanup()
    print()
    print(f"## Rebalancing: {n_clients} clients, {n_typhas} Typhas (kubernetes mode), {n_nodes} Nodes")
    print(f"per-Typha target (upstream's formula, 2 syncer types, lower limit {lower_limit}): {target}; "
          f"one connection shed per {drop_interval:g} s")
    print("| metric | value |")
    print("|---|---|")
    print(f"| connections per Typha after the others joined | {final} |")
    print(f"| shed by the first / client reconnects | {shed} / {reconnects} |")
    print(f"| others joined -> every Typha at or under target, every client in sync | {took:.1f} s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=5000)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--typhas", type=int, default=5, help="rebalancing scenario (0: skip)")
    ap.add_argument("--nodes", type=int, default=1000, help="Kubernetes Nodes for the rebalancing formula")
    ap.add_argument("--drop-interval", type=float, default=0.1,
                    help="TYPHA_CONNECTIONDROPINTERVALSECS (upstream's default, 1 s, sheds 400 clients in ~400 s)")
    ap.add_argument("--lower-limit", type=int, default=400, help="TYPHA_MAXCONNECTIONSLOWERLIMIT")
    args = ap.parse_args()

    from datastore.etcd import EtcdBackend
    from tests.support.etcd_server import EtcdServer
    from tests.typha.support import TyphaProcess, wait_for, wep
    from typha_bench import etcd_metrics

    with EtcdServer() as etcd:
        backend = EtcdBackend(etcd.endpoint)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: backend.apply(*wep(f"ns-{i % 50}", f"pod-{i}",
                                                       f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")),
                          range(args.endpoints)))
        typha = TyphaProcess(etcd.endpoint, TYPHA_LOGSEVERITYSCREEN="WARNING",
                             TYPHA_MAXCONNECTIONSUPPERLIMIT=str(args.clients + 100))
        t0 = time.monotonic()
        typha.start()
        ready_s = time.monotonic() - t0
        try:
            assert typha.proc is not None
            rss0 = rss_mb(typha.proc.pid)
            host, _, port = typha.addr.rpartition(":")
            addr = (host, int(port))
            t1 = time.time()
            pipes, procs = start_clients(addr, args.clients, args.procs)
            connect_s = time.time() - t1

            def synced() -> bool:
                n, closed, _ = clients_status(pipes)
                if closed:
                    raise RuntimeError(f"{closed} clients were disconnected")
                return n >= args.clients

            wait_for(synced, timeout=600, interval=0.5, what="every client in sync")
            all_synced_s = time.time() - t1
            rss1 = rss_mb(typha.proc.pid)
            watchers = etcd_metrics(etcd.endpoint)["watchers"]

            writes: dict[str, float] = {}
            for u in range(args.updates):
                name = f"mark-{u}"
                writes[name] = time.time()
                backend.apply(*wep(MARK_NS, name, "10.255.0.1"))
                time.sleep(0.25)
            time.sleep(3)
            reports = []
            for parent in pipes:
                parent.send("report")
                reports += parent.recv()[1]
            for proc in procs:
                proc.join(10)
        finally:
            typha.cleanup()

    sync_times = [r[0] for r in reports if r[0] is not None]
    fanout = [(arr[name] - writes[name]) * 1000 for _, _, arr in reports for name in writes if name in arr]
    missing = sum(1 for _, _, arr in reports for name in writes if name not in arr)
    print(f"# Typha scale: {args.clients} clients ({args.procs} client processes), one Typha, "
          f"{args.endpoints} WorkloadEndpoints, {os.cpu_count()} CPUs")
    print()
    print("| metric | value |")
    print("|---|---|")
    print(f"| Typha start -> ready | {ready_s:.1f} s |")
    print(f"| clients connected | {connect_s:.1f} s |")
    print(f"| all {args.clients} clients in sync | {all_synced_s:.1f} s (per client p50 "
          f"{pct(sync_times, 0.5):.1f} s, p99 {pct(sync_times, 0.99):.1f} s) |")
    print(f"| snapshot bytes per client | {statistics.median([r[1] for r in reports]) / 1e6:.2f} MB |")
    print(f"| update fan-out p50 / p99 / max | {pct(fanout, 0.5):.0f} / {pct(fanout, 0.99):.0f} / "
          f"{max(fanout, default=0):.0f} ms over {len(fanout)} deliveries ({missing} missing) |")
    print(f"| Typha RSS: idle / with clients / per client | {rss0:.0f} MB / {rss1:.0f} MB / "
          f"{(rss1 - rss0) * 1024 / args.clients:.0f} KB |")
    print(f"| etcd watchers held | {watchers:.0f} |")
    if args.typhas > 1:
        rebalance_bench(args.clients, args.typhas, args.nodes, args.procs, args.drop_interval, args.lower_limit)
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
