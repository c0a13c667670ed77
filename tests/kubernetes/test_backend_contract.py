"""The Backend contract, run against etcd and a real kube-apiserver alike.

The same operations and the same expectations for both datastores, plus each
datastore's own storage layout (etcd keys / CustomResources) and how its
syncer survives a restart and lost history.
"""
from __future__ import annotations

import multiprocessing
import queue
import time
from typing import Any

import pytest

from datastore.backend import EventType
from datastore.errors import AlreadyExists, Conflict, NotFound, Unavailable
from datastore.keys import BlockAffinityKey, BlockKey, HandleKey, ListOptions, ResourceKey
from datastore.syncer import SyncStatus, Syncer, Update

pytestmark = pytest.mark.etcd


def pool(name: str, cidr: str = "10.10.0.0/16") -> dict:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr},
    }


def test_create_get_and_storage_layout(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    key = ResourceKey("IPPool", "pool-a")
    created = backend.create(key, {**pool("pool-a"), "metadata": {"name": "pool-a", "labels": {"x": "y"}}})
    assert created.revision
    got = backend.get(key)
    assert got.value["apiVersion"] == "projectcalico.org/v3" and got.value["kind"] == "IPPool"
    assert got.value["spec"]["cidr"] == "10.10.0.0/16"
    assert got.value["metadata"]["resourceVersion"] == got.revision == created.revision
    assert got.value["metadata"]["uid"]
    assert got.value["metadata"]["creationTimestamp"]
    assert got.value["metadata"]["labels"] == {"x": "y"}
    if datastore.is_kubernetes:
        # Upstream's CR: crd.projectcalico.org/v1, v3 metadata in an annotation.
        cr = datastore.kube.must("GET", "/apis/crd.projectcalico.org/v1/ippools/pool-a")
        assert cr["apiVersion"] == "crd.projectcalico.org/v1" and cr["kind"] == "IPPool"
        assert cr["spec"] == {"cidr": "10.10.0.0/16"}
        assert "creationTimestamp" in cr["metadata"]["annotations"]["projectcalico.org/metadata"]
        assert "projectcalico.org/metadata" not in (got.value["metadata"].get("annotations") or {})
    else:
        raw = backend._post("/kv/range", {"key": "L2NhbGljby9yZXNvdXJjZXMvdjMvcHJvamVjdGNhbGljby5vcmcvaXBwb29scy9wb29sLWE="})
        assert raw["kvs"]
    with pytest.raises(AlreadyExists):
        backend.create(key, pool("pool-a"))


def test_namespaced_keys_and_list(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    if datastore.is_kubernetes:
        for ns in ("ns1", "ns2"):
            datastore.kube.ensure_namespace(ns)
            datastore._namespaces.add(ns)
    for ns, name in [("ns1", "a"), ("ns1", "b"), ("ns2", "a")]:
        backend.create(
            ResourceKey("NetworkPolicy", name, ns),
            {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": {"order": 10}},
        )
    all_items = backend.list(ListOptions("NetworkPolicy"))
    assert sorted((i.key.namespace, i.key.name) for i in all_items.items) == [
        ("ns1", "a"), ("ns1", "b"), ("ns2", "a")
    ]
    ns1 = backend.list(ListOptions("NetworkPolicy", namespace="ns1"))
    assert sorted(i.key.name for i in ns1.items) == ["a", "b"]
    if not datastore.is_kubernetes:
        assert [i.key.name for i in ns1.items] == ["a", "b"]  # etcd lists in key order
        assert ResourceKey("NetworkPolicy", "a", "ns1").path == (
            "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/a"
        )
    assert backend.get(ResourceKey("NetworkPolicy", "a", "ns2")).value["metadata"]["namespace"] == "ns2"
    prefixed = backend.list(ListOptions("NetworkPolicy", namespace="ns1", name_prefix="b"))
    assert [i.key.name for i in prefixed.items] == ["b"]


def test_cas_conflict_detection(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    key = ResourceKey("IPPool", "cas")
    first = backend.create(key, pool("cas"))
    second = backend.update(key, pool("cas", "10.11.0.0/16"), first.revision)
    assert int(second.revision) > int(first.revision)
    with pytest.raises(Conflict) as err:
        backend.update(key, pool("cas", "10.12.0.0/16"), first.revision)
    assert err.value.actual == second.revision
    assert backend.get(key).value["spec"]["cidr"] == "10.11.0.0/16"
    with pytest.raises(Conflict):
        backend.delete(key, first.revision)
    backend.delete(key, second.revision)
    with pytest.raises(NotFound):
        backend.get(key)
    with pytest.raises(NotFound):
        backend.update(key, pool("cas"), second.revision)
    with pytest.raises(NotFound):
        backend.delete(key)


def test_apply_creates_then_replaces_keeping_identity(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    key = ResourceKey("IPPool", "applied")
    first = backend.apply(key, pool("applied"))
    second = backend.apply(key, pool("applied", "10.20.0.0/16"))
    assert second.value["spec"]["cidr"] == "10.20.0.0/16"
    assert second.value["metadata"]["uid"] == first.value["metadata"]["uid"]
    assert backend.get(key).value["metadata"]["creationTimestamp"] == first.value["metadata"]["creationTimestamp"]


def block(cidr: str) -> dict[str, Any]:
    return {"cidr": cidr, "affinity": "host:node-a", "allocations": [None] * 4, "unallocated": [0, 1, 2, 3],
            "attributes": [], "sequenceNumber": 1, "sequenceNumberForAllocation": {}, "deleted": False}


def test_ipam_keys_and_layout(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    key = BlockKey("10.65.0.0/30")
    backend.create(key, block("10.65.0.0/30"))
    backend.create(HandleKey("k8s-pod-network.ABC"), {"block": {"10.65.0.0/30": 1}})
    backend.create(BlockAffinityKey("node-a", "10.65.0.0/30"), {"state": "pending"})
    backend.create(BlockAffinityKey("node-b", "fd00::/126"), {"state": "confirmed"})
    blocks = backend.list(ListOptions("Block"))
    assert [b.key for b in blocks.items] == [key]
    assert blocks.items[0].value["allocations"] == [None] * 4
    assert blocks.items[0].value["affinity"] == "host:node-a"
    assert backend.get(HandleKey("k8s-pod-network.ABC")).value["block"] == {"10.65.0.0/30": 1}
    mine = backend.list(ListOptions("BlockAffinity", host="node-a"))
    assert [(k.key, k.value["state"]) for k in mine.items] == [(BlockAffinityKey("node-a", "10.65.0.0/30"), "pending")]
    v6 = backend.list(ListOptions("BlockAffinity", host="node-b", ip_version=6))
    assert [k.key.host for k in v6.items] == ["node-b"]
    assert backend.list(ListOptions("BlockAffinity", host="node-b", ip_version=4)).items == []
    if datastore.is_kubernetes:
        kube = datastore.kube
        cr = kube.must("GET", "/apis/crd.projectcalico.org/v1/ipamblocks/10-65-0-0-30")
        assert cr["spec"]["cidr"] == "10.65.0.0/30" and cr["spec"]["deleted"] is False
        aff = kube.must("GET", "/apis/crd.projectcalico.org/v1/blockaffinities/node-a-10-65-0-0-30")
        assert aff["spec"] == {"state": "pending", "node": "node-a", "cidr": "10.65.0.0/30",
                               "deleted": "false", "type": "host"}
        assert aff["metadata"]["labels"]["projectcalico.org/ip-version"] == "4"
        assert "projectcalico.org/hostname-hash" in aff["metadata"]["labels"]
        handle = kube.must("GET", "/apis/crd.projectcalico.org/v1/ipamhandles/k8s-pod-network.abc")
        assert handle["spec"]["handleID"] == "k8s-pod-network.ABC"
    else:
        assert key.path == "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-30"


def test_ipam_cas_and_guarded_delete(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    key = BlockKey("10.66.0.0/30")
    first = backend.create(key, block("10.66.0.0/30"))
    changed = dict(first.value, sequenceNumber=2)
    second = backend.update(key, changed, first.revision)
    with pytest.raises(Conflict):
        backend.update(key, dict(first.value, sequenceNumber=3), first.revision)
    with pytest.raises(Conflict):
        backend.delete(key, first.revision)
    assert backend.get(key).value["sequenceNumber"] == 2
    backend.delete(key, second.revision)
    with pytest.raises(NotFound):
        backend.get(key)
    assert backend.list(ListOptions("Block")).items == []
    # Re-creating a deleted block works (no leftovers).
    backend.create(key, block("10.66.0.0/30"))


def test_soft_deleted_ipam_objects_read_as_absent(datastore) -> None:  # type: ignore[no-untyped-def]
    """Upstream KDD marks ``deleted: true`` before deleting; a reader that finds
    such a leftover (the deleter died in between) treats it as gone."""
    if not datastore.is_kubernetes:
        pytest.skip("soft delete is how the Kubernetes datastore deletes IPAM objects")
    backend = datastore.backend
    kube = datastore.kube
    backend.create(HandleKey("leftover"), {"block": {"10.0.0.0/30": 1}})
    path = "/apis/crd.projectcalico.org/v1/ipamhandles/leftover"
    cr = kube.must("GET", path)
    cr["spec"]["deleted"] = True
    kube.must("PUT", path, cr)
    assert backend.list(ListOptions("IPAMHandle")).items == []
    with pytest.raises(NotFound):
        backend.get(HandleKey("leftover"))
    assert kube.request("GET", path)[0] == 404  # the reader finished the delete
    backend.create(HandleKey("leftover"), {"block": {}})


def test_watch_events_are_ordered(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    start = backend.list(ListOptions("IPPool")).revision
    watch = backend.watch(ListOptions("IPPool"), start)
    for i in range(20):
        key = ResourceKey("IPPool", f"p{i}")
        kv = backend.create(key, pool(f"p{i}"))
        if i % 3 == 0:
            backend.delete(key, kv.revision)
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
    assert seen[0].value["spec"]["cidr"] == "10.10.0.0/16"


def test_watch_ipam_soft_delete_is_a_delete(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    start = backend.list(ListOptions("Block")).revision
    watch = backend.watch(ListOptions("Block"), start)
    key = BlockKey("10.67.0.0/30")
    kv = backend.create(key, block("10.67.0.0/30"))
    backend.delete(key, kv.revision)
    events = []
    for event in watch:
        events.append((event.type, event.key))
        if event.type == EventType.DELETE:
            break
    watch.close()
    assert events == [(EventType.PUT, key), (EventType.DELETE, key)]


def _compact(datastore) -> str:  # type: ignore[no-untyped-def]
    """Compact the datastore's history; return a revision that is now too old."""
    if datastore.is_kubernetes:
        from datastore.etcd import EtcdBackend

        etcd = EtcdBackend(datastore.kube.etcd.endpoint)
        try:
            etcd.compact(etcd.current_revision())
        finally:
            etcd.close()
        # Older than anything the API server's watch cache holds.
        return "2"
    backend = datastore.backend
    old = backend.list(ListOptions("IPPool")).revision
    for i in range(5):
        backend.apply(ResourceKey("IPPool", "churn"), pool("churn", f"10.{i}.0.0/16"))
    backend.compact(backend.current_revision())
    return old


def test_watch_from_compacted_revision_reports_resync(datastore) -> None:  # type: ignore[no-untyped-def]
    old = _compact(datastore)
    events = list(datastore.backend.watch(ListOptions("IPPool"), old))
    assert [e.type for e in events] == [EventType.RESYNC]


def _collect(updates: "queue.Queue[Update]", want: set[str], timeout: float = 30) -> dict:
    state: dict[str, str | None] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            update = updates.get(timeout=0.2)
        except queue.Empty:
            continue
        state[update.key.name] = None if update.value is None else update.value["spec"]["cidr"]
        if all(state.get(k) is not None for k in want):
            return state
    raise AssertionError(f"timed out; saw {state}")


def test_syncer_follows_restarts_and_resyncs(datastore, private_kube_apiserver_factory) -> None:  # type: ignore[no-untyped-def]
    """The syncer keeps up across a datastore restart and re-lists after
    history loss (etcd: compaction; Kubernetes: the restarted API server's
    watch cache no longer holds the revision the syncer had)."""
    if not datastore.is_kubernetes:
        pytest.skip("etcd's version: test_etcd_syncer_survives_restart_and_compaction")
    from datastore.kubernetes import KubernetesBackend

    server = private_kube_apiserver_factory()
    backend = KubernetesBackend(kubeconfig=server.kubeconfig, timeout=10)
    writer = KubernetesBackend(kubeconfig=server.kubeconfig, timeout=10)
    updates: "queue.Queue[Update]" = queue.Queue()
    statuses: list[SyncStatus] = []
    writer.create(ResourceKey("IPPool", "before"), pool("before", "10.1.0.0/16"))
    syncer = Syncer(backend, [ListOptions("IPPool")], lambda b: [updates.put(u) for u in b],
                    statuses.append, max_backoff=0.5).start()
    try:
        _collect(updates, {"before"})
        server.restart()
        writer.create(ResourceKey("IPPool", "after-restart"), pool("after-restart", "10.2.0.0/16"))
        _collect(updates, {"after-restart"})
        assert SyncStatus.WAIT_FOR_DATASTORE in statuses[2:], statuses
        server.stop()
        time.sleep(0.3)
        server.start()
        gone = writer.get(ResourceKey("IPPool", "before"))
        writer.delete(gone.key, gone.revision)
        writer.create(ResourceKey("IPPool", "during"), pool("during", "10.3.0.0/16"))
        state = _collect(updates, {"during"})
        deadline = time.monotonic() + 20
        while "before" not in state or state["before"] is not None:
            assert time.monotonic() < deadline, state
            u = updates.get(timeout=10)
            state[u.key.name] = None if u.value is None else u.value["spec"]["cidr"]
        assert set(k.name for k in syncer.cache) == {"after-restart", "during"}
        assert statuses[-1] == SyncStatus.IN_SYNC
        print(f"syncer: {syncer.resyncs} lists, statuses {[s.value for s in statuses]}")
    finally:
        syncer.stop()
        backend.close()
        writer.close()


def test_etcd_syncer_survives_restart_and_compaction(private_etcd) -> None:  # type: ignore[no-untyped-def]
    from datastore.etcd import EtcdBackend

    backend = EtcdBackend(private_etcd.endpoint, timeout=2)
    writer = EtcdBackend(private_etcd.endpoint, timeout=2)
    updates: "queue.Queue[Update]" = queue.Queue()
    statuses: list[SyncStatus] = []
    writer.create(ResourceKey("IPPool", "before"), pool("before", "10.1.0.0/16"))
    syncer = Syncer(backend, [ListOptions("IPPool")], lambda b: [updates.put(u) for u in b],
                    statuses.append, max_backoff=0.5).start()
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
        writer.delete(gone.key, gone.revision)
        writer.create(ResourceKey("IPPool", "during"), pool("during", "10.3.0.0/16"))
        writer.compact(writer.current_revision())
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


def test_unreachable_datastore_is_unavailable(datastore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.etcd_server import free_port

    port = free_port()
    if datastore.is_kubernetes:
        from datastore.kubernetes import KubernetesBackend

        backend: Any = KubernetesBackend(api_endpoint=f"https://127.0.0.1:{port}", timeout=1,
                                         kubeconfig=datastore.kube.kubeconfig)
    else:
        from datastore.etcd import EtcdBackend

        backend = EtcdBackend(f"http://127.0.0.1:{port}", timeout=1)
    start = time.monotonic()
    with pytest.raises(Unavailable) as err:
        backend.get(ResourceKey("IPPool", "x"))
    assert ("unreachable" if datastore.is_kubernetes else "etcd unreachable") in str(err.value)
    assert time.monotonic() - start < 5


def _cas_increment(kind: str, where: str, n: int, conflicts: "multiprocessing.Queue[int]") -> None:
    if kind == "kubernetes":
        from datastore.kubernetes import KubernetesBackend

        backend: Any = KubernetesBackend(kubeconfig=where)
    else:
        from datastore.etcd import EtcdBackend

        backend = EtcdBackend(where)
    key = HandleKey("counter")
    seen_conflicts = 0
    for _ in range(n):
        while True:
            kv = backend.get(key)
            value = dict(kv.value)
            value["block"] = {"10.0.0.0/26": value["block"]["10.0.0.0/26"] + 1}
            try:
                backend.update(key, value, kv.revision)
                break
            except Conflict:
                seen_conflicts += 1
    backend.close()
    conflicts.put(seen_conflicts)


def test_ten_processes_cas_no_lost_update(datastore) -> None:  # type: ignore[no-untyped-def]
    backend = datastore.backend
    backend.create(HandleKey("counter"), {"block": {"10.0.0.0/26": 0}})
    where = datastore.kube.kubeconfig if datastore.is_kubernetes else datastore.netconf["etcd_endpoints"]
    ctx = multiprocessing.get_context("spawn")
    conflicts: "multiprocessing.Queue[int]" = ctx.Queue()
    procs = [ctx.Process(target=_cas_increment, args=(datastore.name, where, 20, conflicts)) for _ in range(10)]
    start = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    total_conflicts = sum(conflicts.get() for _ in procs)
    assert backend.get(HandleKey("counter")).value["block"]["10.0.0.0/26"] == 200
    print(f"{datastore.name}: 10 processes x 20 CAS increments in {time.monotonic() - start:.1f}s, "
          f"{total_conflicts} conflicts retried, none lost")
