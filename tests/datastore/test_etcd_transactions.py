"""The etcd backend's multi-key operations (the CNI fast path's fewer round
trips): batched reads, two-key writes that are both-or-neither, apply in one
transaction, and the keep-alive transport, against a real etcd."""
from __future__ import annotations

import threading

import pytest

from datastore.errors import AlreadyExists, Conflict, NotFound
from datastore.etcd import EtcdBackend
from datastore.keys import BlockKey, HandleKey, ListOptions, ResourceKey

pytestmark = pytest.mark.etcd


def _pool(name: str, cidr: str) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr}}


def test_read_many_is_one_consistent_read(etcd_backend: EtcdBackend) -> None:
    etcd_backend.create(ResourceKey("IPPool", "rm-a"), _pool("rm-a", "10.60.0.0/16"))
    etcd_backend.create(ResourceKey("IPPool", "rm-b"), _pool("rm-b", "10.61.0.0/16"))
    handle = etcd_backend.create(HandleKey("rm-handle"), {"block": {"10.60.0.0/26": 1}})
    got = etcd_backend.read_many([HandleKey("rm-handle"), HandleKey("rm-missing"), ListOptions(kind="IPPool")])
    assert got[0] is not None and got[0].value == {"block": {"10.60.0.0/26": 1}}
    assert got[0].revision == handle.revision
    assert got[1] is None
    pools = got[2]
    assert sorted(kv.key.name for kv in pools.items) == ["rm-a", "rm-b"]
    assert int(pools.revision) >= int(handle.revision)
    assert pools.items[0].value["metadata"]["resourceVersion"] == pools.items[0].revision


def test_create_and_update_is_both_or_neither(etcd_backend: EtcdBackend) -> None:
    block = etcd_backend.create(BlockKey("10.62.0.0/26"), {"cidr": "10.62.0.0/26", "n": 0})
    rev = etcd_backend.create_and_update(HandleKey("cu-1"), {"block": {"10.62.0.0/26": 1}},
                                         BlockKey("10.62.0.0/26"), {"cidr": "10.62.0.0/26", "n": 1}, block.revision)
    assert etcd_backend.get(HandleKey("cu-1")).revision == rev
    assert etcd_backend.get(BlockKey("10.62.0.0/26")).value["n"] == 1
    # Stale block revision: Conflict, and the new handle was not written.
    with pytest.raises(Conflict):
        etcd_backend.create_and_update(HandleKey("cu-2"), {"block": {}}, BlockKey("10.62.0.0/26"),
                                       {"cidr": "10.62.0.0/26", "n": 2}, block.revision)
    with pytest.raises(NotFound):
        etcd_backend.get(HandleKey("cu-2"))
    # Existing handle: AlreadyExists, and the block was not written.
    with pytest.raises(AlreadyExists):
        etcd_backend.create_and_update(HandleKey("cu-1"), {"block": {}}, BlockKey("10.62.0.0/26"),
                                       {"cidr": "10.62.0.0/26", "n": 3}, rev)
    assert etcd_backend.get(BlockKey("10.62.0.0/26")).value["n"] == 1
    with pytest.raises(NotFound):
        etcd_backend.create_and_update(HandleKey("cu-3"), {"block": {}}, BlockKey("10.62.1.0/26"), {}, "1")


def test_update_and_delete_is_both_or_neither(etcd_backend: EtcdBackend) -> None:
    block = etcd_backend.create(BlockKey("10.63.0.0/26"), {"cidr": "10.63.0.0/26", "n": 1})
    handle = etcd_backend.create(HandleKey("ud-1"), {"block": {"10.63.0.0/26": 1}})
    # The handle changed since it was read: Conflict naming it, block untouched.
    newer = etcd_backend.update(HandleKey("ud-1"), {"block": {"10.63.0.0/26": 2}}, handle.revision)
    with pytest.raises(Conflict) as err:
        etcd_backend.update_and_delete(BlockKey("10.63.0.0/26"), {"cidr": "10.63.0.0/26", "n": 0},
                                       block.revision, HandleKey("ud-1"), handle.revision)
    assert err.value.key == HandleKey("ud-1")
    assert etcd_backend.get(BlockKey("10.63.0.0/26")).value["n"] == 1
    etcd_backend.update_and_delete(BlockKey("10.63.0.0/26"), {"cidr": "10.63.0.0/26", "n": 0},
                                   block.revision, HandleKey("ud-1"), newer.revision)
    assert etcd_backend.get(BlockKey("10.63.0.0/26")).value["n"] == 0
    with pytest.raises(NotFound):
        etcd_backend.get(HandleKey("ud-1"))


def test_apply_keeps_uid_and_creation_time(etcd_backend: EtcdBackend) -> None:
    key = ResourceKey("IPPool", "ap-a")
    first = etcd_backend.apply(key, _pool("ap-a", "10.64.0.0/16"))
    meta = first.value["metadata"]
    assert meta["uid"] and meta["creationTimestamp"]
    second = etcd_backend.apply(key, _pool("ap-a", "10.65.0.0/16"))
    assert second.value["spec"]["cidr"] == "10.65.0.0/16"
    stored = etcd_backend.get(key).value["metadata"]
    assert (stored["uid"], stored["creationTimestamp"]) == (meta["uid"], meta["creationTimestamp"])
    assert int(second.revision) > int(first.revision)


def test_transport_reuses_connections_across_threads(etcd_backend: EtcdBackend) -> None:
    """Concurrent callers (the CNI service's request threads) each get a
    connection; afterwards they are kept for reuse, not reopened per request."""
    etcd_backend.create(ResourceKey("IPPool", "tr-a"), _pool("tr-a", "10.66.0.0/16"))
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                etcd_backend.get(ResourceKey("IPPool", "tr-a"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    client = etcd_backend._clients[0]
    idle = list(client._idle)
    assert 1 <= len(idle) <= 6
    socks = {id(conn.sock) for conn in idle}
    for _ in range(10):
        etcd_backend.get(ResourceKey("IPPool", "tr-a"))
    assert {id(conn.sock) for conn in client._idle} <= socks, "a new connection was opened"
