"""Felix under disturbance: restarts, a flushed or deleted table, a datastore
outage, conntrack across policy changes, route/sysctl drift, natOutgoing,
FelixConfiguration changes, health and metrics. Same pods and Felix as the
truth table (package fixture)."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.felix.harness import Cluster, External, HostAgent, nft, nft_table_exists

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

TCP80 = (("tcp", 80),)


def deny_x(c: Cluster) -> dict:  # type: ignore[type-arg]
    return c.k8s_policy("x", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})


def assert_matrix(c: Cluster, expect, probes=TCP80, title: str = "") -> None:  # type: ignore[no-untyped-def]
    result = c.probe_matrix(expect, probes)
    assert not result.wrong, result.describe(title) + "\n--- Felix log ---\n" + c.felix.log_tail(40)


def wait_for(predicate, timeout: float, step: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def test_health_and_metrics(cluster: Cluster) -> None:
    cluster.set_policies([])
    f = cluster.felix
    assert f.http(f.health_port, "/liveness")[0] == 200
    status, body = f.http(f.health_port, "/readiness")
    assert status == 200 and "int-dataplane" in body
    m = f.metrics()
    assert m["felix_active_local_endpoints"] == 9
    assert m["felix_resyncs_started"] >= 1
    assert m["felix_int_dataplane_apply_time_seconds_count"] >= 1
    assert "felix_active_local_policies" in m
    # Nothing drifted so far: every periodic check found the table (and routes) as programmed.
    assert m["felix_dataplane_repairs"] == 0
    cluster.sync(cluster.apply_all([deny_x(cluster)]))
    assert f.metrics()["felix_active_local_policies"] == 1


def test_flushed_table_is_restored(cluster: Cluster) -> None:
    cluster.set_policies([deny_x(cluster)])
    assert_matrix(cluster, lambda s, d, p, n: d.ns != "x", title="before flush")
    nft("flush", "table", "inet", cluster.table)
    # Refresh interval is 2 s in the tests.
    took = wait_for(lambda: "jump wl-forward" in nft("list", "chain", "inet", cluster.table, "filter-FORWARD"),
                    timeout=6)
    assert_matrix(cluster, lambda s, d, p, n: d.ns != "x", title=f"after flush (restored in {took:.1f}s)")
    assert cluster.felix.metrics()["felix_dataplane_repairs"] >= 1


def test_deleted_table_and_tampered_chain_are_restored(cluster: Cluster) -> None:
    cluster.set_policies([deny_x(cluster)])
    x_a = cluster.pod("x/a")
    # Someone inserts an accept-all rule into an endpoint chain: repaired.
    nft("insert", "rule", "inet", cluster.table, f"tw-{x_a.iface}", "accept")
    wait_for(lambda: "accept" not in nft("list", "chain", "inet", cluster.table, f"tw-{x_a.iface}"), timeout=6)
    nft("delete", "table", "inet", cluster.table)
    wait_for(lambda: nft_table_exists(cluster.table), timeout=6)
    assert_matrix(cluster, lambda s, d, p, n: d.ns != "x", title="after the table was deleted")


def test_kill_change_restart_converges(cluster: Cluster) -> None:
    cluster.set_policies([deny_x(cluster)])
    cluster.felix.kill()
    # Rules survive Felix: x is still closed.
    assert_matrix(cluster, lambda s, d, p, n: d.ns != "x", title="Felix dead")
    cluster.delete("NetworkPolicy", "knp.default.deny-in", cluster.ns("x"))
    rev = cluster.put(cluster.k8s_policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    cluster.felix.start()
    cluster.felix.wait_ready()
    cluster.sync(rev)
    assert_matrix(cluster, lambda s, d, p, n: d.ns != "y", title="after restart")
    listing = nft("list", "table", "inet", cluster.table)
    assert f"knp.default.deny-in" in listing and f"np/{cluster.ns('x')}/" not in listing


def test_datastore_outage(cluster: Cluster, etcd_server) -> None:  # type: ignore[no-untyped-def]
    cluster.set_policies([deny_x(cluster)])
    resyncs = cluster.felix.metrics()["felix_resyncs_started"]
    etcd_server.stop()
    try:
        time.sleep(1.0)
        assert cluster.felix.running()
        f = cluster.felix
        assert f.http(f.health_port, "/liveness")[0] == 200
        assert_matrix(cluster, lambda s, d, p, n: d.ns != "x", title="etcd down")
    finally:
        etcd_server.start()
    cluster.delete("NetworkPolicy", "knp.default.deny-in", cluster.ns("x"))
    rev = cluster.put(cluster.k8s_policy("z", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    cluster.felix.wait_revision(rev, timeout=30)
    assert_matrix(cluster, lambda s, d, p, n: d.ns != "z", title="etcd back")
    assert cluster.felix.running()
    assert cluster.felix.metrics()["felix_resyncs_started"] >= resyncs


def test_conntrack_survives_allowed_recompute_and_cuts_denied(cluster: Cluster) -> None:
    cluster.set_policies([])
    x_a, y_b = cluster.pod("x/a"), cluster.pod("y/b")
    assert x_a.cmd({"cmd": "open", "id": "c1", "target": [y_b.ip, 80]})["ok"]
    try:
        assert x_a.cmd({"cmd": "send", "id": "c1"})["ok"]
        # A policy that still allows the flow: the connection survives.
        cluster.sync(cluster.put(cluster.calico_policy("y", "from-x", {
            "selector": "all()",
            "ingress": [{"action": "Allow", "source": {"namespaceSelector": "ns == 'x'"}}]})))
        assert x_a.cmd({"cmd": "send", "id": "c1"})["ok"], "allowed connection was cut"
        # Now the flow is denied: the established connection is cut too.
        cluster.sync(cluster.put(cluster.calico_policy("y", "from-x", {
            "selector": "all()",
            "ingress": [{"action": "Allow", "source": {"namespaceSelector": "ns == 'z'"}}]})))
        assert not x_a.cmd({"cmd": "send", "id": "c1", "timeout": 1.0})["ok"], "denied connection still works"
    finally:
        x_a.cmd({"cmd": "close", "id": "c1"})


def test_routes_and_sysctls_are_repaired(cluster: Cluster) -> None:
    cluster.set_policies([])
    pod = cluster.pod("z/c")
    subprocess.run(["ip", "route", "del", f"{pod.ip}/32", "dev", pod.iface], check=True)
    with open(f"/proc/sys/net/ipv4/conf/{pod.iface}/proxy_arp", "w") as f:
        f.write("0")

    def repaired() -> bool:
        routes = subprocess.run(["ip", "route", "show", f"{pod.ip}/32"], capture_output=True, text=True).stdout
        with open(f"/proc/sys/net/ipv4/conf/{pod.iface}/proxy_arp") as f:
            return f"dev {pod.iface}" in routes and f.read().strip() == "1"

    wait_for(repaired, timeout=6)
    assert_matrix(cluster, lambda s, d, p, n: True, title="after route repair")


def test_nat_outgoing(cluster: Cluster) -> None:
    cluster.set_policies([])
    pod = cluster.pod("x/b")
    pool = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": f"felix-{cluster.uid}"},
            "spec": {"cidr": str(cluster.subnet), "natOutgoing": False}}
    with External(cluster.uid, 9100) as ext:
        try:
            cluster.sync(cluster.put(pool))
            assert pod.cmd({"cmd": "who", "target": [ext.ip, 9100]})["seen_as"] == pod.ip
            pool["spec"]["natOutgoing"] = True
            cluster.sync(cluster.put(pool))
            assert str(cluster.subnet) in nft("list", "set", "inet", cluster.table, "masq-ipam-pools")
            # conntrack remembers the un-NATed flow for a while: probe from a fresh socket (new port).
            assert pod.cmd({"cmd": "who", "target": [ext.ip, 9100]})["seen_as"] == ext.host_ip
            # Pod-to-pod traffic inside the pool is not masqueraded.
            assert_matrix(cluster, lambda s, d, p, n: True, title="natOutgoing on")
        finally:
            cluster.sync(cluster.delete("IPPool", f"felix-{cluster.uid}"))


def test_default_endpoint_to_host_action_from_felix_configuration(cluster: Cluster) -> None:
    cluster.set_policies([])
    pod = cluster.pod("y/a")
    host = HostAgent()
    with External(cluster.uid, 9100) as ext:  # gives the host an address the pod can route to
        try:
            probe = {"cmd": "probe", "timeout": 0.5, "targets": [[ext.host_ip, "udp", host.port]]}
            assert pod.cmd(probe)["results"] == [False], "workload reached the host with the default Drop"
            config = {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                      "metadata": {"name": f"node.{cluster.node}"},
                      "spec": {"defaultEndpointToHostAction": "Accept"}}
            cluster.sync(cluster.put(config))
            assert pod.cmd(probe)["results"] == [True], "defaultEndpointToHostAction Accept not applied"
        finally:
            cluster.sync(cluster.delete("FelixConfiguration", f"node.{cluster.node}"))
            host.close()
        assert pod.cmd(probe)["results"] == [False]
