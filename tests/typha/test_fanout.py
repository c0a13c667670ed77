"""200 clients through one Typha on a real etcd: identical state, fan-out latency."""
from __future__ import annotations

import statistics
import time

import pytest

from tests.typha.support import Collector, TyphaProcess, etcd_state, wait_for, wep

N_CLIENTS = 200


@pytest.fixture
def typha(etcd_backend, etcd_server):  # type: ignore[no-untyped-def]
    proc = TyphaProcess(etcd_server.endpoint)
    yield proc
    proc.cleanup()


def test_200_clients_identical_state_and_fanout(etcd_backend, typha, unique):  # type: ignore[no-untyped-def]
    for i in range(50):
        etcd_backend.apply(*wep(f"ns-{unique}", f"pod-{i}", f"10.1.0.{i}"))
    typha.start()
    clients = [Collector(typha.addr, f"node-{i}").start() for i in range(N_CLIENTS)]
    try:
        expected = etcd_state(etcd_backend)
        assert len(expected) == 50
        wait_for(lambda: all(c.syncer.in_sync and c.snapshot() == expected for c in clients), 30,
                 0.1, "all clients in sync with the snapshot")
        assert typha.metric("typha_connections_active") == N_CLIENTS
        assert typha.metric("typha_snapshot_size") == 50

        latencies: list[float] = []
        for round_ in range(10):
            key, value = wep(f"ns-{unique}", f"pod-{round_}", f"10.2.0.{round_}")
            t0 = time.monotonic()
            kv = etcd_backend.apply(key, value)
            arrival_key = (key.path, kv.revision)
            wait_for(lambda: all(arrival_key in c.arrivals for c in clients), 10, 0.005, "update at all clients")
            latencies += [c.arrivals[arrival_key] - t0 for c in clients]
        # A deletion reaches everyone too.
        etcd_backend.delete(wep(f"ns-{unique}", "pod-49")[0])
        expected = etcd_state(etcd_backend)
        wait_for(lambda: all(c.snapshot() == expected for c in clients), 10, 0.02, "delete at all clients")
        for c in clients:
            assert len(c.log) == 50 + 10 + 1, "each client saw the snapshot and each update exactly once"
        latencies.sort()
        p50 = statistics.median(latencies)
        p95 = latencies[int(len(latencies) * 0.95)]
        print(f"\nfan-out etcd put -> {N_CLIENTS} clients: p50 {p50 * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        _, text = typha.http(typha.metrics_port, "/metrics")
        assert "typha_fanout_latency_seconds_count" in text
        assert typha.http(typha.health_port, "/liveness")[0] == 200
    finally:
        for c in clients:
            c.syncer._stop.set()
        for c in clients:
            c.stop()
