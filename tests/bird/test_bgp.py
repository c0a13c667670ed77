"""Route distribution between simulated nodes with the real BIRD, real etcd and
our CNI plugin (nodes are network namespaces on a shared bridge)."""
from __future__ import annotations

import ipaddress
import re

import pytest

from bird.control import bird_command
from tests.support.nodes import Cluster, Pod, SimNode, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

POOL = "10.65.0.0/16"
POOL6 = "fd10:65::/48"


def block_for(index: int) -> str:
    return f"10.65.{index}.0/26"


def start_nodes(cluster: Cluster, count: int, claim: bool = True) -> list[SimNode]:
    """``count`` nodes running confd + BIRD; with ``claim``, node-i owns block
    10.65.i.0/26 (written as calico-ipam writes a claim)."""
    cluster.create_pool(POOL)
    nodes = [cluster.add_node(f"node-{i}") for i in range(1, count + 1)]
    if claim:
        for i, node in enumerate(nodes, 1):
            cluster.claim_block(node.name, block_for(i))
    for node in nodes:
        node.start_confd()
    return nodes


def add_pod(cluster: Cluster, node: SimNode, name: str) -> tuple[Pod, str]:
    """A pod on ``node`` via our CNI plugin and calico-ipam; returns it and
    the block (affine to the node) its address came from."""
    pod = node.add_pod(name)
    blocks = [b for b in cluster.node_blocks(node.name)
              if ipaddress.ip_address(pod.ip) in ipaddress.ip_network(b)]
    assert len(blocks) == 1, (pod.ip, cluster.node_blocks(node.name))
    return pod, blocks[0]


def pod_ip6(pod: Pod) -> str:
    return next(str(ipaddress.ip_interface(i["address"]).ip) for i in pod.result["ips"] if ":" in i["address"])


def assert_all_ping(pods: list[Pod]) -> None:
    for a in pods:
        for b in pods:
            if a is not b:
                assert a.ping(b.ip), f"{a.name}@{a.node.name} cannot reach {b.name}@{b.node.name} ({b.ip})"


def test_full_mesh_three_nodes(dual_stack_cluster: Cluster) -> None:
    """Dual stack: IPv4 and IPv6 mesh sessions, pods with an address of each family."""
    cluster = dual_stack_cluster
    cluster.create_pool(POOL6, name="default-ipv6-ippool")
    nodes = start_nodes(cluster, 3, claim=False)
    ipam = {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true"}
    pods = [node.add_pod(f"pod-{i}", ipam) for i, node in enumerate(nodes, 1)]
    blocks = [cluster.node_blocks(node.name) for node in nodes]
    for node_blocks in blocks:
        assert sorted(ipaddress.ip_network(b).version for b in node_blocks) == [4, 6], node_blocks
    for node in nodes:
        node.wait_established({a for n in nodes if n is not node for a in (n.ip, n.ip6)})
    # Every node has a BGP route (proto bird) to every other node's blocks, via
    # that node, and a blackhole for its own.
    for node, own in zip(nodes, blocks):
        for other, theirs in zip(nodes, blocks):
            if other is not node:
                for block in theirs:
                    node.wait_route(block, via=other.ip if "." in block else other.ip6)
        for block in own:
            assert node.routes(family=ipaddress.ip_network(block).version)[block].startswith("blackhole")
    assert {p.peer_type for p in nodes[0].peers()} == {"node-to-node mesh"}
    assert_all_ping(pods)
    for a in pods:
        for b in pods:
            if a is not b:
                assert a.run("ping", "-6", "-c", "1", "-W", "2", pod_ip6(b)).returncode == 0, (a.name, b.name)

    # Remove node-3: its routes disappear from the others.
    cluster.remove_node("node-3")
    for node in nodes[:2]:
        for block in blocks[2]:
            node.wait_route(block, present=False, timeout=15)
        wait_for(lambda node=node: {nodes[2].ip, nodes[2].ip6}.isdisjoint(p.address for p in node.peers()),
                 10, what=f"{node.name}: sessions to node-3 removed")
    assert pods[0].ping(pods[1].ip) and pods[1].ping(pods[0].ip)


def test_route_reflector_four_nodes_without_mesh(cluster: Cluster) -> None:
    cluster.apply_resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})
    cluster.apply_resource("BGPPeer", "peer-with-route-reflectors",
                           {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})
    cluster.create_pool(POOL)
    clients = [cluster.add_node(f"node-{i}") for i in (1, 2, 3)]
    rr = cluster.add_node("rr-1", rr_cluster_id="244.0.0.1", labels={"route-reflector": "true"})
    for node in [*clients, rr]:
        node.start_confd()
    pods, blocks = zip(*(add_pod(cluster, node, f"pod-{i}") for i, node in enumerate(clients, 1)))

    rr.wait_established({c.ip for c in clients})
    for node in clients:
        node.wait_established({rr.ip})
        peers = node.peers()
        assert [(p.address, p.peer_type) for p in peers] == [(rr.ip, "node specific")], peers
        for other, block in zip(clients, blocks):
            if other is not node:  # reflected routes keep the originating node as next hop
                node.wait_route(block, via=other.ip)
    with open(rr.config_path) as f:
        assert "rr client;" in f.read()
    assert_all_ping(list(pods))


def test_external_peer_receives_pod_blocks(cluster: Cluster) -> None:
    nodes = start_nodes(cluster, 2)
    tor = cluster.add_external_bird("tor", asn=65000, neighbors={n.ip: 64512 for n in nodes})
    cluster.apply_resource("BGPPeer", "tor", {"peerIP": tor.ip, "asNumber": 65000})

    for node in nodes:
        node.wait_established({tor.ip, *(n.ip for n in nodes if n is not node)})
        assert {(p.address, p.peer_type) for p in node.peers()} >= {(tor.ip, "global")}
    wait_for(lambda: {block_for(1), block_for(2)} <= set(tor.routes()), 20, what="blocks at the ToR")
    routes = tor.routes()
    assert f"via {nodes[0].ip}" in routes[block_for(1)]
    assert f"via {nodes[1].ip}" in routes[block_for(2)]
    # Each node announces only its own block to the eBGP peer.
    for node, own in ((nodes[0], block_for(1)), (nodes[1], block_for(2))):
        reply = bird_command(tor.socket_path, f"show route protocol node_{node.ip.replace('.', '_')}")
        announced = {line.split()[0] for code, line in reply.lines if code == 1007 and line[:1].isdigit()}
        assert announced == {own}, reply.text


def test_as_change_and_new_peer_reconfigure_without_restart(cluster: Cluster) -> None:
    n1, n2 = start_nodes(cluster, 2)
    n1.wait_established({n2.ip})
    n2.wait_established({n1.ip})
    pids = (n1.bird_pid(), n2.bird_pid())
    assert None not in pids

    cluster.apply_resource("BGPConfiguration", "default", {"asNumber": 64600})
    for node, other in ((n1, n2), (n2, n1)):
        def local_as(node: SimNode = node, other: SimNode = other) -> bool:
            name = f"Mesh_{other.ip.replace('.', '_')}"
            text = bird_command(node.socket_path, f"show protocols all {name}").text
            return bool(re.search(r"Local AS:\s+64600\b", text)) and "Established" in text

        wait_for(local_as, 30, what=f"{node.name}: mesh session re-established in AS 64600")
    assert (n1.bird_pid(), n2.bird_pid()) == pids

    cluster.apply_resource("BGPPeer", "extra", {"peerIP": "172.31.0.250", "asNumber": 65001})
    for node in (n1, n2):
        wait_for(lambda node=node: "172.31.0.250" in {p.address for p in node.peers()}, 15,
                 what=f"{node.name}: session to the new peer")
    n1.wait_route(block_for(2), via=n2.ip)
    assert (n1.bird_pid(), n2.bird_pid()) == pids
