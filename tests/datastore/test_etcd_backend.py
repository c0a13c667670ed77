"""The etcd v3 backend against a real etcd."""
from __future__ import annotations

import multiprocessing
import queue
import threading
import time

import pytest

from datastore.backend import EventType
from datastore.errors import AlreadyExists, Conflict, NotFound, Unavailable
from datastore.etcd import EtcdBackend
from datastore.keys import BlockKey, HandleKey, ListOptions, ResourceKey
from datastore.syncer import SyncStatus, Syncer, Update

pytestmark = pytest.mark.etcd


def pool(name: str, cidr: str = "10.10.0.0/16") -> dict:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr},
    }


def test_create_get_and_key_layout(etcd_backend: EtcdBackend) -> None:
    key = ResourceKey("IPPool", "pool-a")
    created = etcd_backend.create(key, pool("pool-a"))
    assert created.revision
    got = etcd_backend.get(key)
    assert got.value["spec"]["cidr"] == "10.10.0.0/16"
    assert got.value["metadata"]["resourceVersion"] == got.revision == created.revision
    assert got.value["metadata"]["uid"]
    # Upstream's key layout, readable by etcdctl; resourceVersion is not stored.
    raw = etcd_backend._post("/kv/range", {"key": "L2NhbGljby9yZXNvdXJjZXMvdjMvcHJvamVjdGNhbGljby5vcmcvaXBwb29scy9wb29sLWE="})
    assert raw["kvs"], "expected /calico/resources/v3/projectcalico.org/ippools/pool-a"
    with pytest.raises(AlreadyExists):
        etcd_backend.create(key, pool("pool-a"))


def test_namespaced_keys_and_list(etcd_backend: EtcdBackend) -> None:
    for ns, name in [("ns1", "a"), ("ns1", "b"), ("ns2", "a")]:
        etcd_backend.create(
            ResourceKey("NetworkPolicy", name, ns),
            {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": {}},
        )
    assert ResourceKey("NetworkPolicy", "a", "ns1").path == (
        "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/a"
    )
    all_items = etcd_backend.list(ListOptions("NetworkPolicy"))
    assert sorted((i.key.namespace, i.key.name) for i in all_items.items) == [
        ("ns1", "a"), ("ns1", "b"), ("ns2", "a")
    ]
    ns1 = etcd_backend.list(ListOptions("NetworkPolicy", namespace="ns1"))
    assert [i.key.name for i in ns1.items] == ["a", "b"]


def test_cas_conflict_detection(etcd_backend: EtcdBackend) -> None:
    key = ResourceKey("IPPool", "cas")
    first = etcd_backend.create(key, pool("cas"))
    second = etcd_backend.update(key, pool("cas", "10.11.0.0/16"), first.revision)
    assert int(second.revision) > int(first.revision)
    with pytest.raises(Conflict) as err:
        etcd_backend.update(key, pool("cas", "10.12.0.0/16"), first.revision)
    assert err.value.actual == second.revision
    assert etcd_backend.get(key).value["spec"]["cidr"] == "10.11.0.0/16"
    with pytest.raises(Conflict):
        etcd_backend.delete(key, first.revision)
    etcd_backend.delete(key, second.revision)
    with pytest.raises(NotFound):
        etcd_backend.get(key)
    with pytest.raises(NotFound):
        etcd_backend.update(key, pool("cas"), second.revision)
    with pytest.raises(NotFound):
        etcd_backend.delete(key)


def test_ipam_keys(etcd_backend: EtcdBackend) -> None:
    block = BlockKey("10.65.0.0/26")
    assert block.path == "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26"
    etcd_backend.create(block, {"cidr": "10.65.0.0/26"})
    etcd_backend.create(HandleKey("k8s-pod-network.abc"), {"handleID": "k8s-pod-network.abc", "block": {}})
    blocks = etcd_backend.list(ListOptions("Block"))
    assert [b.key for b in blocks.items] == [block]
    assert etcd_backend.get(HandleKey("k8s-pod-network.abc")).value["handleID"] == "k8s-pod-network.abc"


def test_watch_events_are_ordered(etcd_backend: EtcdBackend) -> None:
    start = etcd_backend.list(ListOptions("IPPool")).revision
    watch = etcd_backend.watch(ListOptions("IPPool"), start)
    for i in range(20):
        key = ResourceKey("IPPool", f"p{i}")
        kv = etcd_backend.create(key, pool(f"p{i}"))
        if i % 3 == 0:
            etcd_backend.delete(key, kv.revision)
    seen = []
    for event in watch:
        seen.append(event)
        if len(seen) == 27:
            break
    watch.close()
    revisions = [int(e.revision) for e in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    expected = []
    for i in range(20):
        expected.append((EventType.PUT, f"p{i}"))
        if i % 3 == 0:
            expected.append((EventType.DELETE, f"p{i}"))
    assert [(e.type, e.key.name) for e in seen] == expected


def test_watch_from_compacted_revision_reports_resync(etcd_backend: EtcdBackend) -> None:
    old = etcd_backend.list(ListOptions("IPPool")).revision
    for i in range(5):
        etcd_backend.apply(ResourceKey("IPPool", "churn"), pool("churn", f"10.{i}.0.0/16"))
    etcd_backend.compact(etcd_backend.current_revision())
    events = list(etcd_backend.watch(ListOptions("IPPool"), old))
    assert [e.type for e in events] == [EventType.RESYNC]


def _collect(syncer_updates: "queue.Queue[Update]", want: set[str], timeout: float = 20) -> dict:
    state: dict[str, str | None] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            update = syncer_updates.get(timeout=0.2)
        except queue.Empty:
            continue
        state[update.key.name] = None if update.value is None else update.value["spec"]["cidr"]
        if want <= {k for k, v in state.items()}:
            if all(state.get(k) is not None for k in want):
                return state
    raise AssertionError(f"timed out; saw {state}")


def test_syncer_survives_etcd_restart_and_compaction(private_etcd) -> None:  # type: ignore[no-untyped-def]
    backend = EtcdBackend(private_etcd.endpoint, timeout=2)
    writer = EtcdBackend(private_etcd.endpoint, timeout=2)
    updates: "queue.Queue[Update]" = queue.Queue()
    statuses: list[SyncStatus] = []

    def on_updates(batch: list[Update]) -> None:
        for u in batch:
            updates.put(u)

    writer.create(ResourceKey("IPPool", "before"), pool("before", "10.1.0.0/16"))
    syncer = Syncer(backend, [ListOptions("IPPool")], on_updates, statuses.append, max_backoff=0.5).start()
    try:
        _collect(updates, {"before"})
        # Restart etcd (same data dir): the syncer reconnects and continues.
        private_etcd.kill()
        time.sleep(0.5)
        private_etcd.start()
        writer.create(ResourceKey("IPPool", "after-restart"), pool("after-restart", "10.2.0.0/16"))
        _collect(updates, {"after-restart"})
        assert SyncStatus.WAIT_FOR_DATASTORE in statuses[2:], statuses
        assert statuses[-1] == SyncStatus.IN_SYNC

        # Stop etcd, change things behind the syncer's back and compact history:
        # on reconnect the watch reports compaction and the syncer re-lists,
        # delivering the new key and the deletion it missed.
        private_etcd.stop()
        time.sleep(0.3)
        private_etcd.start()
        gone = writer.get(ResourceKey("IPPool", "before"))
        syncer_watch_paused = threading.Event()
        writer.delete(gone.key, gone.revision)
        writer.create(ResourceKey("IPPool", "during"), pool("during", "10.3.0.0/16"))
        writer.compact(writer.current_revision())
        syncer_watch_paused.set()
        state = _collect(updates, {"during"})
        deadline = time.monotonic() + 10
        while "before" not in state or state["before"] is not None:
            assert time.monotonic() < deadline, state
            u = updates.get(timeout=5)
            state[u.key.name] = None if u.value is None else u.value["spec"]["cidr"]
        assert set(k.name for k in syncer.cache) == {"after-restart", "during"}
    finally:
        syncer.stop()
        backend.close()
        writer.close()


def test_unreachable_etcd_is_unavailable() -> None:
    from tests.support.etcd_server import free_port

    backend = EtcdBackend(f"http://127.0.0.1:{free_port()}", timeout=1)
    start = time.monotonic()
    with pytest.raises(Unavailable) as err:
        backend.get(ResourceKey("IPPool", "x"))
    assert "etcd unreachable" in str(err.value)
    assert time.monotonic() - start < 5


def _cas_increment(endpoint: str, n: int, conflicts: "multiprocessing.Queue[int]") -> None:
    backend = EtcdBackend(endpoint)
    key = HandleKey("counter")
    seen_conflicts = 0
    for _ in range(n):
        while True:
            kv = backend.get(key)
            value = dict(kv.value)
            value["count"] = value["count"] + 1
            try:
                backend.update(key, value, kv.revision)
                break
            except Conflict:
                seen_conflicts += 1
    conflicts.put(seen_conflicts)


def test_ten_processes_cas_no_lost_update(etcd_backend: EtcdBackend, etcd_server) -> None:  # type: ignore[no-untyped-def]
    etcd_backend.create(HandleKey("counter"), {"count": 0})
    ctx = multiprocessing.get_context("spawn")
    conflicts: "multiprocessing.Queue[int]" = ctx.Queue()
    procs = [ctx.Process(target=_cas_increment, args=(etcd_server.endpoint, 20, conflicts)) for _ in range(10)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    total_conflicts = sum(conflicts.get() for _ in procs)
    assert etcd_backend.get(HandleKey("counter")).value["count"] == 200
    print(f"10 processes x 20 CAS increments: {total_conflicts} conflicts retried, none lost")
