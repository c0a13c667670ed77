"""bird.cfg rendering and peer selection (pure logic; BIRD only parses the output)."""
from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from bird.peerings import duration_seconds, hashed_router_id, plan_sessions
from bird.render import BirdOptions, render
from bird.state import BGPState
from bird.status import format_table, parse_protocols, peer_from_protocol
from datastore.keys import BlockAffinityKey, ResourceKey

BIRD = shutil.which("bird") or "/usr/sbin/bird"


def res(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


def add_node(state: BGPState, name: str, ip: str | None, **bgp: Any) -> None:
    labels = bgp.pop("labels", None)
    spec: dict[str, Any] = {}
    if ip:
        spec["bgp"] = {"ipv4Address": ip, **bgp}
    state.apply(ResourceKey("Node", name), res("Node", name, spec, labels))


def mesh_state(n: int = 3) -> BGPState:
    state = BGPState()
    for i in range(1, n + 1):
        add_node(state, f"node-{i}", f"172.31.0.{i}/24")
    state.apply(ResourceKey("IPPool", "pool"), res("IPPool", "pool", {"cidr": "10.65.0.0/16"}))
    return state


def check_with_bird(text: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bird.cfg"
    path.write_text(text)
    proc = subprocess.run([BIRD, "-p", "-c", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + "\n" + text


def names(state: BGPState, node: str) -> list[str]:
    return [s.name for s in plan_sessions(state, node).sessions]


def test_mesh_sessions_passive_side_and_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state()
    plan = plan_sessions(state, "node-2")
    assert [(s.name, s.passive, s.peer_as) for s in plan.sessions] == [
        ("Mesh_172_31_0_1", False, 64512),
        ("Mesh_172_31_0_3", True, 64512),
    ]
    assert plan.router_id == "172.31.0.2" and plan.local_as == 64512
    text = render(state, "node-2")
    assert "router id 172.31.0.2;" in text and "local as 64512;" in text
    assert "source address 172.31.0.2;" in text
    check_with_bird(text, tmp_path)


def test_as_number_precedence() -> None:
    state = mesh_state(2)
    state.apply(ResourceKey("BGPConfiguration", "default"), res("BGPConfiguration", "default", {"asNumber": 65100}))
    assert plan_sessions(state, "node-1").local_as == 65100
    add_node(state, "node-2", "172.31.0.2/24", asNumber=65200)
    plan = plan_sessions(state, "node-1")
    assert plan.local_as == 65100 and plan.sessions[0].peer_as == 65200
    assert plan_sessions(state, "node-2").local_as == 65200


def test_only_confirmed_affine_blocks_are_exported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state(2)
    state.apply(BlockAffinityKey("node-1", "10.65.1.0/26"), {"state": "confirmed", "deleted": False})
    state.apply(BlockAffinityKey("node-1", "10.65.9.0/26"), {"state": "pending", "deleted": False})
    state.apply(BlockAffinityKey("node-1", "10.65.8.0/26"), {})  # old upstream: empty = confirmed
    state.apply(BlockAffinityKey("node-2", "10.65.2.0/26"), {"state": "confirmed", "deleted": False})
    text = render(state, "node-1")
    assert "route 10.65.1.0/26 blackhole;" in text and "route 10.65.8.0/26 blackhole;" in text
    assert "10.65.9.0" not in text and "10.65.2.0" not in text
    assert "if ( net = 10.65.1.0/26 ) then accept;" in text
    # Borrowed addresses: kernel routes inside a pool (after our own blocks' more-specifics are rejected).
    assert "if ( source = RTS_INHERIT && net ~ [ 10.65.0.0/16+ ] ) then accept;" in text
    check_with_bird(text, tmp_path)
    state.apply(BlockAffinityKey("node-1", "10.65.1.0/26"), None)
    assert "10.65.1.0" not in render(state, "node-1")
    # A pool with disableBGPExport keeps its blocks to the node.
    state.apply(ResourceKey("IPPool", "pool"), res("IPPool", "pool", {"cidr": "10.65.0.0/16", "disableBGPExport": True}))
    assert "10.65.8.0" not in render(state, "node-1")


def test_route_reflector_layout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state(3)
    add_node(state, "rr-1", "172.31.0.9/24", routeReflectorClusterID="244.0.0.1",
             labels={"route-reflector": "true"})
    state.apply(ResourceKey("BGPConfiguration", "default"),
                res("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}))
    state.apply(ResourceKey("BGPPeer", "to-rr"), res("BGPPeer", "to-rr", {
        "nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}))
    client = plan_sessions(state, "node-1")
    assert [(s.name, s.kind, s.rr_client, s.passive) for s in client.sessions] == [
        ("Node_172_31_0_9", "node", False, True)]
    rr = plan_sessions(state, "rr-1")
    assert [(s.name, s.rr_client, s.rr_cluster_id) for s in rr.sessions] == [
        (f"Node_172_31_0_{i}", True, "244.0.0.1") for i in (1, 2, 3)]
    text = render(state, "rr-1")
    assert "rr client;" in text and "rr cluster id 244.0.0.1;" in text
    check_with_bird(text, tmp_path)
    # With the mesh on, clients still do not mesh with the reflector.
    state.apply(ResourceKey("BGPConfiguration", "default"), res("BGPConfiguration", "default", {}))
    assert names(state, "node-1") == ["Mesh_172_31_0_2", "Mesh_172_31_0_3", "Node_172_31_0_9"]
    # reversePeering: Manual keeps the reflector from peering back.
    state.apply(ResourceKey("BGPPeer", "to-rr"), res("BGPPeer", "to-rr", {
        "nodeSelector": "all()", "peerSelector": "route-reflector == 'true'", "reversePeering": "Manual"}))
    assert names(state, "rr-1") == []


def test_global_and_node_peers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state(2)
    add_node(state, "node-2", "172.31.0.2/24", labels={"rack": "a"})
    state.apply(ResourceKey("BGPPeer", "tor"), res("BGPPeer", "tor", {
        "peerIP": "172.31.0.200", "asNumber": 65000, "keepaliveTime": "10s", "maxRestartTime": "2m"}))
    state.apply(ResourceKey("BGPPeer", "n1-only"), res("BGPPeer", "n1-only", {
        "node": "node-1", "peerIP": "172.31.0.201:1179", "asNumber": 65001, "nextHopMode": "Self"}))
    state.apply(ResourceKey("BGPPeer", "rack-a"), res("BGPPeer", "rack-a", {
        "nodeSelector": "rack == 'a'", "peerIP": "172.31.0.202", "asNumber": 65002, "ttlSecurity": 2}))
    n1 = {s.name: s for s in plan_sessions(state, "node-1").sessions}
    n2 = {s.name: s for s in plan_sessions(state, "node-2").sessions}
    assert set(n1) == {"Mesh_172_31_0_2", "Global_172_31_0_200", "Node_172_31_0_201_port_1179"}
    assert set(n2) == {"Mesh_172_31_0_1", "Global_172_31_0_200", "Node_172_31_0_202"}
    tor = n1["Global_172_31_0_200"]
    assert (tor.peer_as, tor.internal, tor.keepalive_time, tor.graceful_restart_time) == (65000, False, 10, 120)
    text1, text2 = render(state, "node-1"), render(state, "node-2")
    assert "neighbor 172.31.0.201 port 1179 as 65001;" in text1 and "next hop self;" in text1
    assert "calico_export_to_bgp_peers(false)" in text1
    assert "ttl security on;\n  multihop 2;" in text2
    check_with_bird(text1, tmp_path)
    check_with_bird(text2, tmp_path)


def test_password_from_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state(2)
    state.apply(ResourceKey("BGPPeer", "tor"), res("BGPPeer", "tor", {
        "peerIP": "172.31.0.200", "asNumber": 65000,
        "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "tor"}}}))
    secrets = {("bgp-secrets", "tor"): "s3cret!"}
    text = render(state, "node-1", secrets=lambda n, k: secrets.get((n, k)))
    assert 'password "s3cret!";' in text
    check_with_bird(text, tmp_path)
    secrets[("bgp-secrets", "tor")] = 'a"b'
    text = render(state, "node-1", secrets=lambda n, k: secrets.get((n, k)))
    assert "Global_172_31_0_200" not in text and "contains a quote" in text
    missing = render(state, "node-1")
    assert "Global_172_31_0_200" not in missing and "secret bgp-secrets/tor not found" in missing


def test_ipv6_sessions_and_blocks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = BGPState()
    add_node(state, "node-1", "172.31.0.1/24", ipv6Address="fd00:31::1/64")
    add_node(state, "node-2", "172.31.0.2/24", ipv6Address="fd00:31::2/64")
    state.apply(ResourceKey("IPPool", "p6"), res("IPPool", "p6", {"cidr": "fd10::/48"}))
    state.apply(BlockAffinityKey("node-1", "fd10::/122"), {"state": "confirmed", "deleted": False})
    assert names(state, "node-1") == ["Mesh_172_31_0_2", "Mesh_fd00_31__2"]
    text = render(state, "node-1")
    assert "route fd10::/122 blackhole;" in text and "calico_export_to_bgp_peers_v6(true)" in text
    check_with_bird(text, tmp_path)


def test_node_without_address_and_invalid_resources(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state(2)
    add_node(state, "bare", None)
    assert plan_sessions(state, "bare").sessions == []
    assert plan_sessions(state, "bare").router_id == hashed_router_id("bare")
    assert "Mesh_" not in "".join(names(state, "node-1")).replace("Mesh_172_31_0_2", "")
    # An invalid BGPPeer is ignored (logged), the rest still renders.
    assert not state.apply(ResourceKey("BGPPeer", "bad"), res("BGPPeer", "bad", {"peerIP": "not-an-ip"}))
    check_with_bird(render(state, "bare"), tmp_path)
    check_with_bird(render(state, "node-1", BirdOptions(hold_time=6, keepalive_time=2, log_severity="Debug")),
                    tmp_path)


def test_listen_port_and_bind_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = mesh_state(2)
    state.apply(ResourceKey("BGPConfiguration", "default"),
                res("BGPConfiguration", "default", {"listenPort": 1179, "bindMode": "NodeIP"}))
    text = render(state, "node-1")
    assert "local port 1179 as 64512;" in text and "strict bind on;" in text
    assert "neighbor 172.31.0.2 port 1179 as 64512;" in text
    check_with_bird(text, tmp_path)


def test_durations() -> None:
    assert duration_seconds("90s") == 90 and duration_seconds("1m30s") == 90
    assert duration_seconds("500ms") == 1 and duration_seconds(None) is None


SHOW_PROTOCOLS = [
    (2002, "Name       Proto      Table      State  Since         Info"),
    (1002, "kernel4    Kernel     master4    up     18:22:57.271  "),
    (1002, "Mesh_172_31_0_2 BGP        ---        up     18:22:58.382  Established   "),
    (1002, "Global_172_31_0_200 BGP        ---        start  2026-11-24 10:00:00  Active        Socket: Connection refused"),
    (1002, "Node_fd00__9_port_1179 BGP        ---        start  18:22:58.382  Connect"),
    (0, ""),
]


def test_status_parsing() -> None:
    rows = [p for proto in parse_protocols(SHOW_PROTOCOLS) if (p := peer_from_protocol(proto))]
    assert [(r.address, r.port, r.peer_type, r.state, r.established) for r in rows] == [
        ("172.31.0.2", None, "node-to-node mesh", "up", True),
        ("172.31.0.200", None, "global", "start", False),
        ("fd00::9", 1179, "node specific", "start", False),
    ]
    assert rows[1].since == "2026-11-24 10:00:00" and rows[1].info == "Active Socket: Connection refused"
    table = format_table(rows)
    assert "| 172.31.0.2   | node-to-node mesh | up" in table
