"""Kubernetes connection rebalancing between real Typhas (real kube-apiserver).

20 simulated nodes, each with a Felix (``felix`` syncer) and a confd (``bgp``
syncer) client that find Typha through the Service: 40 connections, all on the
first Typha. Upstream's target per Typha is
``syncerTypes * (1 + nodes * 1.2 / (typhas - 1))``: with a second Typha that is
still above 40 (upstream keeps room for one Typha to die), so nothing moves;
with a third the first sheds down to its target and the shed clients reconnect
to the others.
"""
from __future__ import annotations

import time
import uuid

import pytest

from datastore.kubernetes.endpoints import count_nodes
from tests.typha.support import Collector, TyphaService, kdd_typha, wait_for
from typha.config import rebalance_target
from typha.discovery import AddressTracker, ServiceDiscoverer

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

NODES = 20


@pytest.fixture
def nodes(kube_apiserver):  # type: ignore[no-untyped-def]
    prefix = f"typha-rb-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i}" for i in range(NODES)]
    for name in names:
        kube_apiserver.must("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    yield names
    for name in names:
        kube_apiserver.request("DELETE", f"/api/v1/nodes/{name}")


def test_a_new_typha_takes_over_its_share(kube_apiserver, kube_backend, nodes, host_ip) -> None:  # type: ignore[no-untyped-def]
    svc = TyphaService(kube_apiserver, f"typha-rb-{uuid.uuid4().hex[:6]}").create()
    env = {"TYPHA_CONNECTIONREBALANCINGMODE": "kubernetes", "TYPHA_K8SSERVICENAME": svc.name,
           "TYPHA_K8SNAMESPACE": svc.namespace, "TYPHA_K8SSERVICEPOLLINTERVALSECS": "0.5",
           "TYPHA_MAXCONNECTIONSLOWERLIMIT": "1", "TYPHA_CONNECTIONDROPINTERVALSECS": "0.2"}
    typhas = [kdd_typha(kube_apiserver, host_ip, **env) for _ in range(3)]
    clients: list[Collector] = []

    def active() -> list[int]:
        return [int(t.metric("typha_connections_active")) if t.proc else 0 for t in typhas]

    try:
        a, b, c = typhas
        a.start()
        svc.add_typha("a", a)
        for i, name in enumerate(nodes):
            for syncer_type in ("felix", "bgp"):
                tracker = AddressTracker(ServiceDiscoverer(lambda: kube_backend.api, svc.name, svc.namespace, name))
                clients.append(Collector(tracker, name, syncer_type=syncer_type).start())  # type: ignore[arg-type]
        wait_for(lambda: all(cl.syncer.in_sync for cl in clients), 60, 0.1, "40 clients in sync")
        wait_for(lambda: active()[0] == 2 * NODES, 10, 0.1, "all 40 on the first Typha")
        n = count_nodes(kube_backend.api)
        lone = a.metric("typha_connections_target")
        assert lone == 10000, "a lone Typha takes everything up to the upper limit"

        # A second Typha: the target stays above 40 (room for one to die), nobody is shed.
        b.start()
        svc.add_typha("b", b)
        two = rebalance_target(1, 10000, 2, n, 2)
        assert two >= 2 * NODES
        wait_for(lambda: a.metric("typha_connections_target") == two, 10, 0.1, f"target {two} with 2 Typhas")
        time.sleep(1.0)
        assert a.metric('typha_connections_dropped{reason="shed"}') == 0
        assert active()[:2] == [2 * NODES, 0]

        # A third: the first sheds to its share, the clients move to the others.
        c.start()
        t0 = time.monotonic()
        svc.add_typha("c", c)
        three = rebalance_target(1, 10000, 2, n, 3)
        assert three < 2 * NODES, f"{n} nodes: target {three} would not shed anything"
        wait_for(lambda: a.metric("typha_connections_target") == three, 10, 0.1, f"target {three} with 3 Typhas")
        wait_for(lambda: active()[0] <= three and sum(active()) == 2 * NODES
                 and all(cl.syncer.in_sync for cl in clients), 60, 0.1, "rebalanced")
        took = time.monotonic() - t0
        time.sleep(1.5)  # stays put: nobody is above a target now
        final = active()
        shed = int(a.metric('typha_connections_dropped{reason="shed"}'))
        print(f"\n{n} nodes, 40 clients: target per Typha {two} with 2 Typhas, {three} with 3; "
              f"after the third started: {final} (first shed {shed}) in {took:.1f}s")
        assert final[0] <= three and sum(final) == 2 * NODES
        assert final[1] > 0 and final[2] > 0, final
        assert shed == 2 * NODES - three, "shed exactly the surplus, no more"
        # Every client, wherever it went, still has the full, identical state.
        felix_states = {repr(sorted(cl.snapshot().items())) for cl in clients if cl.syncer.syncer_type == "felix"}
        bgp_states = {repr(sorted(cl.snapshot().items())) for cl in clients if cl.syncer.syncer_type == "bgp"}
        assert len(felix_states) == 1 and len(bgp_states) == 1
        assert sum(1 for cl in clients for p in cl.snapshot() if "/nodes/" in p) >= NODES * NODES, \
            "bgp clients see the Node resources"
    finally:
        for cl in clients:
            cl.stop()
        for t in typhas:
            t.cleanup()
        svc.cleanup()
