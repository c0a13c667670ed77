"""Typha discovery through the Kubernetes Service's EndpointSlices (real kube-apiserver).

Two real calico-typha processes on the Kubernetes datastore, a Service and
EndpointSlices pointing at them; Felix's syncer (``felix.typha.make_syncer``)
configured with only ``TyphaK8sServiceName``. It connects to one, gets the
snapshot, and when that Typha is killed it moves to the other and resyncs.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest

from datastore.keys import ListOptions, ResourceKey
from datastore.syncer import SyncStatus, Update
from tests.typha.support import TyphaService, kdd_typha, wait_for
from typha.discovery import AddressTracker, NoTyphaError, ServiceDiscoverer

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def netset(name: str, cidr: str) -> tuple[ResourceKey, dict[str, Any]]:
    key = ResourceKey("GlobalNetworkSet", name)
    return key, {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                 "metadata": {"name": name, "labels": {"t": "typha-discovery"}}, "spec": {"nets": [cidr]}}


class Sink:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.status = SyncStatus.WAIT_FOR_DATASTORE

    def updates(self, updates: list[Update]) -> None:
        for u in updates:
            if u.value is None:
                self.state.pop(u.key.path, None)
            else:
                self.state[u.key.path] = u.value

    def on_status(self, status: SyncStatus) -> None:
        self.status = status


@pytest.fixture
def service(kube_apiserver):  # type: ignore[no-untyped-def]
    svc = TyphaService(kube_apiserver, f"typha-{uuid.uuid4().hex[:6]}").create()
    yield svc
    svc.cleanup()


def felix_syncer(service: TyphaService, backend: Any, sink: Sink, node: str = "felix-node") -> Any:
    from felix.typha import make_syncer
    from felix.daemon import WATCHED_KINDS

    env = {"FELIX_TYPHAK8SSERVICENAME": service.name, "FELIX_TYPHAREADTIMEOUT": "5",
           "FELIX_CONFIGFILE": "/nonexistent/felix.cfg"}
    return make_syncer(env, node, backend, [ListOptions(k) for k in WATCHED_KINDS], sink.updates, sink.on_status)


def test_discovery_reads_ready_endpoints_local_first(kube_apiserver, kube_backend, service) -> None:  # type: ignore[no-untyped-def]
    disc = ServiceDiscoverer(lambda: kube_backend.api, service.name, "kube-system", node="node-b")
    with pytest.raises(NoTyphaError, match="no ready Typha endpoints"):
        disc.load()
    service.add("a", 7001, node="node-a")
    service.add("b", 7002, node="node-b")
    service.add("c", 7003, node="node-c")
    service.add("notready", 7004, node="node-b", ready=False)
    service.add("otherport", 7005, node="node-b", port_name="metrics")
    seen_first: set[str] = set()
    for _ in range(12):
        addrs = [a.addr for a in disc.load()]
        assert addrs[0] == "198.18.0.1:7002", "this node's Typha comes first"
        assert sorted(addrs[1:]) == ["198.18.0.1:7001", "198.18.0.1:7003"]
        seen_first.add(addrs[1])
    assert len(seen_first) == 2, "remote Typhas are shuffled"
    # The tracker walks the list, then starts over; a connection resets it.
    tracker = AddressTracker(disc)
    picks = [tracker.next_addr().addr for _ in range(3)]
    assert picks[0] == "198.18.0.1:7002" and sorted(picks) == ["198.18.0.1:7001", "198.18.0.1:7002", "198.18.0.1:7003"]
    assert tracker.next_addr().addr == "198.18.0.1:7002"
    tracker.connected(disc.load()[0])
    assert tracker.next_addr().addr != "198.18.0.1:7002", "after losing a Typha, another one is tried first"


def test_felix_finds_typha_by_service_and_fails_over(kube_apiserver, kube_backend, service, host_ip,  # type: ignore[no-untyped-def]
                                                     caplog) -> None:
    name = f"typha-disc-{uuid.uuid4().hex[:6]}"
    key, value = netset(name, "10.8.0.0/24")
    kube_backend.apply(key, value)
    typhas = [kdd_typha(kube_apiserver, host_ip), kdd_typha(kube_apiserver, host_ip)]
    sink = Sink()
    syncer = None
    try:
        # No endpoints yet: Felix says why, keeps waiting, and never goes to the datastore itself.
        caplog.set_level(logging.INFO, logger="typha")
        syncer = felix_syncer(service, kube_backend, sink)
        syncer._discovery_max_backoff = 1.0
        syncer.start()
        wait_for(lambda: syncer.discovery_failures >= 1, 10, what="a failed look-up")
        assert any("no ready Typha endpoints in Service kube-system/" + service.name in r.getMessage()
                   for r in caplog.records), "a clear log line says why Felix is waiting"
        assert sink.status != SyncStatus.IN_SYNC
        for i, t in enumerate(typhas):
            t.start()
            service.add_typha(str(i), t, node=f"typha-node-{i}")
        wait_for(lambda: sink.status == SyncStatus.IN_SYNC, 30, what="in sync through Typha")
        assert sink.state.get(key.path, {}).get("spec") == value["spec"]
        first = next(t for t in typhas if t.addr == syncer.addr)
        other = next(t for t in typhas if t is not first)
        wait_for(lambda: first.metric("typha_connections_active") == 1, 10)
        assert other.metric("typha_connections_active") == 0

        # Kill the Typha it picked: it moves to the other one and resyncs.
        resyncs = syncer.resyncs
        t0 = time.monotonic()
        first.kill()
        wait_for(lambda: syncer.resyncs > resyncs and sink.status == SyncStatus.IN_SYNC, 30,
                 interval=0.005, what="resync through the other Typha")
        took = time.monotonic() - t0
        assert syncer.addr == other.addr
        print(f"\nTypha killed -> resynced through the other in {took * 1000:.0f} ms")
        assert sink.state.get(key.path, {}).get("spec") == value["spec"]
        # Updates flow through the new Typha.
        key2, value2 = netset(name + "-2", "10.9.0.0/24")
        kube_backend.apply(key2, value2)
        wait_for(lambda: key2.path in sink.state, 15, what="an update through the second Typha")
        assert other.metric("typha_connections_active") == 1
    finally:
        if syncer is not None:
            syncer.stop()
        for t in typhas:
            t.cleanup()
        for k in (key, ResourceKey("GlobalNetworkSet", name + "-2")):
            try:
                kube_backend.delete(k)
            except Exception:  # noqa: BLE001 - already gone
                pass


def test_discovery_and_rebalance_counts_with_the_shipped_rbac(kube_apiserver, service, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Felix's and Typha's own ServiceAccounts (packaging/manifests/rbac) may do these look-ups."""
    from datastore.kubernetes.backend import make_transport
    from typha.config import TyphaConfig
    from typha.rebalance import compute_target

    service.add("a", 7001, node="node-a")
    service.add("b", 7002, node="node-b")
    apis = {}
    for sa in ("calico-felix", "calico-typha"):
        token = kube_apiserver.request_token("kube-system", sa)
        path = kube_apiserver.token_kubeconfig(token, str(tmp_path / f"{sa}.kubeconfig"))
        apis[sa] = make_transport(path, None, 5.0, "http")
    try:
        addrs = ServiceDiscoverer(lambda: apis["calico-felix"], service.name, node="node-a").load()
        assert [a.addr for a in addrs][0] == "198.18.0.1:7001"
        cfg = TyphaConfig(k8s_service_name=service.name, max_connections_lower_limit=1)
        target, why = compute_target(apis["calico-typha"], cfg, 2)
        assert why.startswith("2 Typhas, "), why
        assert target < cfg.max_connections_upper_limit
    finally:
        for api in apis.values():
            api.close()
