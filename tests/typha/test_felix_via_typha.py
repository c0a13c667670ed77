"""Felix through Typha: the same data reaches its calculation layer as direct.

Real Felix, real pods (CNI plugin), real Typha, real etcd: policy takes effect
through Typha, and Felix converges after a Typha restart with a change made
while Typha was down (``FELIX_TYPHAADDR``); with only
``FELIX_TYPHAK8SSERVICENAME`` Felix finds two Typhas through the Service's
EndpointSlices (real kube-apiserver) and, when its Typha is killed, moves to the
other and converges on a change made meanwhile.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.felix.harness import Cluster
from tests.typha.support import TyphaProcess, TyphaService, listen_on, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


@pytest.fixture
def typha_cluster(etcd_server, cni_path) -> Iterator[tuple[Cluster, TyphaProcess]]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    from datastore.etcd import EtcdBackend
    from tests.support.etcd_server import wipe_calico

    backend = EtcdBackend(etcd_server.endpoint)
    wipe_calico(backend)
    typha = TyphaProcess(etcd_server.endpoint).start()
    c = Cluster(backend, etcd_server.endpoint, cni_path, namespaces=("x", "y"), pods=("a", "b"))
    c.felix.env["FELIX_TYPHAADDR"] = typha.addr
    c.felix.env["FELIX_TYPHAREADTIMEOUT"] = "5"
    try:
        c.setup()
        yield c, typha
    finally:
        c.teardown()
        typha.cleanup()
        wipe_calico(backend)
        backend.close()


def test_felix_gets_its_data_through_typha(typha_cluster) -> None:  # type: ignore[no-untyped-def]
    c, typha = typha_cluster
    assert "using Typha at" in c.felix.log_tail(400)
    assert typha.metric("typha_connections_active") == 1
    deny_x = c.k8s_policy("x", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    c.set_policies([deny_x])
    result = c.probe_matrix(lambda s, d, p, n: d.ns != "x", (("tcp", 80),))
    assert not result.wrong, result.describe("deny x via Typha")
    # Typha goes away; a change is made meanwhile; Felix converges once Typha is back.
    typha.kill()
    rev = c.reset_policy()
    typha.start()
    c.sync(rev)
    wait_for(lambda: typha.metric("typha_connections_active") == 1, 15)
    result = c.probe_matrix(lambda s, d, p, n: True, (("tcp", 80),))
    assert not result.wrong, result.describe("after Typha restart")


def test_felix_finds_typha_through_the_service(etcd_server, cni_path, kube_apiserver, host_ip) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    import uuid

    from datastore.etcd import EtcdBackend
    from tests.support.etcd_server import wipe_calico

    backend = EtcdBackend(etcd_server.endpoint)
    wipe_calico(backend)
    svc = TyphaService(kube_apiserver, f"typha-felix-{uuid.uuid4().hex[:6]}").create()
    typhas = [listen_on(TyphaProcess(etcd_server.endpoint), host_ip).start() for _ in range(2)]
    for i, t in enumerate(typhas):
        svc.add_typha(str(i), t, node=f"typha-node-{i}")
    c = Cluster(backend, etcd_server.endpoint, cni_path, namespaces=("x", "y"), pods=("a", "b"))
    c.felix.env["FELIX_TYPHAK8SSERVICENAME"] = svc.name
    c.felix.env["KUBECONFIG"] = kube_apiserver.kubeconfig
    c.felix.env["FELIX_TYPHAREADTIMEOUT"] = "5"
    try:
        c.setup()
        assert f"discovered through Service kube-system/{svc.name}" in c.felix.log_tail(400)
        counts = [t.metric("typha_connections_active") for t in typhas]
        assert sorted(counts) == [0, 1], counts
        first, other = (typhas[0], typhas[1]) if counts[0] == 1 else (typhas[1], typhas[0])
        deny_x = c.k8s_policy("x", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
        c.set_policies([deny_x])
        result = c.probe_matrix(lambda s, d, p, n: d.ns != "x", (("tcp", 80),))
        assert not result.wrong, result.describe("deny x via a discovered Typha")
        first.kill()
        rev = c.reset_policy()
        c.sync(rev)
        wait_for(lambda: other.metric("typha_connections_active") == 1, 15)
        result = c.probe_matrix(lambda s, d, p, n: True, (("tcp", 80),))
        assert not result.wrong, result.describe("after fail-over to the other Typha")
    finally:
        c.teardown()
        for t in typhas:
            t.cleanup()
        svc.cleanup()
        wipe_calico(backend)
        backend.close()
