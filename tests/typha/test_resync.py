"""Typha restart and datastore restart: clients resync to one consistent state,
with no lost and no repeated update."""
from __future__ import annotations

import time
from collections import Counter

from datastore.etcd import EtcdBackend
from tests.typha.support import Collector, TyphaProcess, etcd_state, wait_for, wep


def _no_duplicates(c: Collector) -> None:
    counts = Counter((path, rev, value is None) for path, value, rev in c.log)
    dupes = [k for k, n in counts.items() if n > 1]
    assert not dupes, f"{c.syncer.node} got repeated updates: {dupes[:5]}"


def test_typha_restart_clients_reconnect_and_resync(etcd_backend, etcd_server, unique):  # type: ignore[no-untyped-def]
    ns = f"ns-{unique}"
    for i in range(20):
        etcd_backend.apply(*wep(ns, f"pod-{i}", f"10.1.0.{i}"))
    typha = TyphaProcess(etcd_server.endpoint).start()
    clients = [Collector(typha.addr, f"node-{i}", min_backoff=0.05, max_backoff=0.5).start() for i in range(10)]
    try:
        expected = etcd_state(etcd_backend)
        wait_for(lambda: all(c.syncer.in_sync and c.snapshot() == expected for c in clients), 15)
        typha.kill()
        wait_for(lambda: not any(c.syncer.in_sync for c in clients), 10, what="clients notice the loss")
        # Change the datastore while Typha is down: add, modify, delete.
        etcd_backend.apply(*wep(ns, "pod-new", "10.9.9.9"))
        etcd_backend.apply(*wep(ns, "pod-3", "10.3.3.3"))
        etcd_backend.delete(wep(ns, "pod-7")[0])
        typha.start()
        expected = etcd_state(etcd_backend)
        wait_for(lambda: all(c.syncer.in_sync and c.snapshot() == expected for c in clients), 15,
                 what="clients resynced after the restart")
        for c in clients:
            assert c.syncer.connections >= 2
            # Exactly the three changes were delivered on resync: nothing unchanged was repeated.
            assert len(c.log) == 20 + 3, c.log[20:]
            assert c.log[20:] and {p for p, _, _ in c.log[20:]} == {
                wep(ns, n)[0].path for n in ("pod-new", "pod-3", "pod-7")}
            _no_duplicates(c)
        # And live updates flow again.
        etcd_backend.apply(*wep(ns, "pod-after", "10.8.8.8"))
        expected = etcd_state(etcd_backend)
        wait_for(lambda: all(c.snapshot() == expected for c in clients), 10)
    finally:
        for c in clients:
            c.stop()
        typha.cleanup()


def test_datastore_restart_typha_resyncs_without_loss_or_duplication(private_etcd, unique):  # type: ignore[no-untyped-def]
    ns = f"ns-{unique}"
    backend = EtcdBackend(private_etcd.endpoint)
    for i in range(10):
        backend.apply(*wep(ns, f"pod-{i}", f"10.1.0.{i}"))
    typha = TyphaProcess(private_etcd.endpoint).start()
    clients = [Collector(typha.addr, f"node-{i}").start() for i in range(10)]
    try:
        expected = etcd_state(backend)
        wait_for(lambda: all(c.syncer.in_sync and c.snapshot() == expected for c in clients), 15)
        # Updates right up to the kill, then more right after the restart.
        for i in range(5):
            backend.apply(*wep(ns, f"pod-{i}", f"10.2.0.{i}"))
        private_etcd.kill()
        wait_for(lambda: typha.http(typha.health_port, "/readiness")[0] == 503, 15,
                 what="Typha notices the datastore is gone")
        private_etcd.start()
        wait_for(lambda: typha.http(typha.health_port, "/readiness")[0] == 200, 20,
                 what="Typha back in sync")
        for i in range(5, 10):
            backend.apply(*wep(ns, f"pod-{i}", f"10.3.0.{i}"))
        backend.delete(wep(ns, "pod-0")[0])
        expected = etcd_state(backend)
        wait_for(lambda: all(c.snapshot() == expected for c in clients), 15, what="clients consistent")
        for c in clients:
            _no_duplicates(c)
            # 10 snapshot + 5 before the kill + 5 after + 1 delete: nothing lost, nothing repeated.
            assert len(c.log) == 21, [(p.rsplit("/", 1)[-1], r) for p, _, r in c.log]
            assert c.syncer.connections == 1, "clients stay connected across a datastore outage"
    finally:
        for c in clients:
            c.stop()
        typha.cleanup()
        backend.close()


def test_sigterm_drains_connections_gradually(etcd_backend, etcd_server, unique):  # type: ignore[no-untyped-def]
    etcd_backend.apply(*wep(f"ns-{unique}", "pod-1"))
    typha = TyphaProcess(etcd_server.endpoint, TYPHA_SHUTDOWNTIMEOUTSECS="2").start()
    clients = [Collector(typha.addr, f"node-{i}", min_backoff=5, max_backoff=5).start() for i in range(6)]
    try:
        wait_for(lambda: all(c.syncer.in_sync for c in clients), 10)
        assert typha.proc is not None
        typha.proc.terminate()
        lost: dict[int, float] = {}
        t0 = time.monotonic()
        while len(lost) < 6 and time.monotonic() - t0 < 6:
            for i, c in enumerate(clients):
                if i not in lost and not c.syncer.in_sync:
                    lost[i] = time.monotonic() - t0
            time.sleep(0.01)
        assert len(lost) == 6
        spread = max(lost.values()) - min(lost.values())
        assert 1.0 < spread < 2.5, sorted(lost.values())
        assert typha.proc.wait(5) == 0
    finally:
        for c in clients:
            c.stop()
        typha.cleanup()
