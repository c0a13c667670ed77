"""Which BGP sessions a node runs, from the cluster's BGP state (pure logic).

Upstream's rules:

* Node-to-node mesh (``nodeToNodeMeshEnabled``, default on): one ``Mesh_<ip>``
  session to every other node with an address of the family, except that
  route reflectors (nodes with ``routeReflectorClusterID``) neither mesh nor
  are meshed with. Between two Calico nodes the one whose address compares
  higher (as a string, as upstream) is the passive side: it waits for the
  other to connect, so each pair opens one TCP session.
* BGPPeers: a peer with neither ``node`` nor ``nodeSelector`` is global
  (``Global_<ip>``), else it applies to that node or the nodes the selector
  matches (``Node_<ip>``). ``peerIP`` names the remote; ``peerSelector``
  names Calico nodes instead, and such a peering also runs in reverse (the
  selected node peers with every node the BGPPeer applies to) unless
  ``reversePeering: Manual``.
* A route reflector marks every iBGP peer outside its cluster as its client
  (``rr client; rr cluster id``).
* An explicit BGPPeer to an address wins over a mesh session to it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from typing import Callable

from bird.state import BGPState, NodeInfo, PeerInfo

log = logging.getLogger(__name__)

SecretLookup = Callable[[str, str], "str | None"]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str | None) -> int | None:
    """A Go duration (``90s``, ``1m30s``) in whole seconds (at least 1); None if unset."""
    if not text or text == "0":
        return None
    total = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return max(1, int(round(total)))


@dataclass(frozen=True)
class Session:
    """One BGP session (a BIRD ``protocol bgp``)."""

    name: str
    kind: str  # "mesh" | "global" | "node"
    family: int  # 4 | 6
    neighbor: str
    peer_as: int
    local_as: int
    source_address: str | None = None
    port: int | None = None
    passive: bool = False
    rr_client: bool = False
    rr_cluster_id: str | None = None
    password: str | None = None
    graceful_restart_time: int | None = None
    keepalive_time: int | None = None
    ttl_security: int | None = None
    multihop: bool = True
    next_hop: str | None = None  # "self" | "keep"
    allow_local_as: int | None = None
    description: str = ""  # BGPPeer name or peer node name

    @property
    def internal(self) -> bool:
        return self.peer_as == self.local_as


@dataclass
class Plan:
    """What a node's BIRD should run."""

    node: str
    router_id: str
    local_as: int
    ipv4: str | None
    ipv6: str | None
    is_route_reflector: bool
    sessions: list[Session] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)  # this node's blocks to export
    reflect_pools: list[str] = field(default_factory=list)  # pools whose routes an RR passes on
    notes: list[str] = field(default_factory=list)  # comments for the rendered file


def proto_name(prefix: str, ip: str, port: int | None = None) -> str:
    name = f"{prefix}_{ip.replace('.', '_').replace(':', '_')}"
    return f"{name}_port_{port}" if port else name


def hashed_router_id(node: str) -> str:
    """A stable IPv4-shaped router id from the node name (``CALICO_ROUTER_ID=hash``)."""
    digest = int.from_bytes(hashlib.sha256(node.encode()).digest()[:4], "big")
    return str(ipaddress.IPv4Address(digest or 1))


def _matches(selector: str, labels: dict[str, str]) -> bool:
    from datastore.selector import SelectorError, parse_selector

    try:
        return parse_selector(selector).evaluate(labels)
    except SelectorError:
        return False


def _applies_to(peer: PeerInfo, node: NodeInfo) -> bool:
    if peer.node:
        return peer.node == node.name
    if peer.node_selector:
        return _matches(peer.node_selector, node.labels)
    return True


def _addr(node: NodeInfo, family: int) -> str | None:
    return node.ipv4 if family == 4 else node.ipv6


def plan_sessions(
    state: BGPState,
    node_name: str,
    *,
    router_id: str | None = None,
    secrets: SecretLookup | None = None,
) -> Plan:
    """The sessions, blocks and router id for ``node_name``'s BIRD."""
    me = state.nodes.get(node_name)
    glob = state.global_config()
    local_as = int(state.as_number_of(me))
    ipv4 = me.ipv4 if me else None
    ipv6 = me.ipv6 if me else None
    if router_id == "hash" or (router_id is None and not ipv4):
        rid = hashed_router_id(node_name)
    else:
        rid = router_id or ipv4 or hashed_router_id(node_name)
    plan = Plan(
        node=node_name,
        router_id=rid,
        local_as=local_as,
        ipv4=ipv4,
        ipv6=ipv6,
        is_route_reflector=bool(me and me.rr_cluster_id),
    )
    export_pools = [p for p in state.pools.values() if p.disable_bgp_export]
    for cidr in state.blocks_of(node_name):
        net = ipaddress.ip_network(cidr)
        if net.prefixlen == net.max_prefixlen:
            continue  # upstream skips /32 (/128) blocks
        if any(net.subnet_of(ipaddress.ip_network(p.cidr)) for p in export_pools
               if ipaddress.ip_network(p.cidr).version == net.version):
            continue
        plan.blocks.append(cidr)
    plan.reflect_pools = sorted(
        (p.cidr for p in state.pools.values() if not p.disable_bgp_export),
        key=lambda c: (ipaddress.ip_network(c).version, c),
    )
    if me is None:
        plan.notes.append(f"node {node_name} is not in the datastore: no BGP sessions")
        return plan
    if not ipv4 and not ipv6:
        plan.notes.append(f"node {node_name} has no BGP address: no BGP sessions")
        return plan

    lookup = secrets or (lambda name, key: None)
    sessions: dict[tuple[int, str, int | None], Session] = {}
    mesh: dict[tuple[int, str, int | None], Session] = {}

    def password(ref: tuple[str, str] | None, what: str) -> tuple[bool, str | None]:
        if ref is None:
            return True, None
        value = lookup(*ref)
        if value is None:
            plan.notes.append(f"{what}: secret {ref[0]}/{ref[1]} not found: session skipped")
            return False, None
        if '"' in value or "\n" in value:
            # BIRD strings have no escapes: such a password cannot be written.
            plan.notes.append(f"{what}: password in {ref[0]}/{ref[1]} contains a quote or newline: "
                              "session skipped")
            return False, None
        return True, value

    def calico_peer(other: NodeInfo, family: int, kind: str, peer: PeerInfo | None) -> None:
        ip, my_ip = _addr(other, family), _addr(me, family)
        if not ip or not my_ip or ip == my_ip or other.name == me.name:
            return
        peer_as = int(state.as_number_of(other))
        port = state.node_config(other.name).listen_port or glob.listen_port
        port = None if port in (None, 179) else port
        rr_client = bool(
            me.rr_cluster_id and peer_as == local_as and other.rr_cluster_id != me.rr_cluster_id
        )
        if kind == "mesh":
            ok, pw = password(glob.node_mesh_password, "node mesh")
            if not ok:
                return
            session = Session(
                name=proto_name("Mesh", ip, port), kind=kind, family=family, neighbor=ip,
                peer_as=peer_as, local_as=local_as, source_address=my_ip, port=port,
                passive=ip > my_ip, password=pw,
                graceful_restart_time=duration_seconds(glob.node_mesh_max_restart_time),
                description=other.name,
            )
            mesh[(family, ip, port)] = session
            return
        assert peer is not None
        ok, pw = password(peer.password_secret, f"BGPPeer {peer.name}")
        if not ok:
            return
        sessions.setdefault((family, ip, port), _peer_session(
            peer, kind, family, ip, port, peer_as, local_as, my_ip, pw,
            passive=ip > my_ip, rr_client=rr_client, rr_cluster_id=me.rr_cluster_id,
            description=other.name,
        ))

    for family in (4, 6):
        my_ip = _addr(me, family)
        if not my_ip:
            continue
        # Node-to-node mesh.
        if glob.node_mesh is not False and not me.rr_cluster_id:
            for other in sorted(state.nodes.values(), key=lambda n: n.name):
                if not other.rr_cluster_id:
                    calico_peer(other, family, "mesh", None)
        # BGPPeers.
        for peer in sorted(state.peers.values(), key=lambda p: p.name):
            kind = "global" if peer.is_global else "node"
            if _applies_to(peer, me):
                if peer.peer_selector:
                    for other in sorted(state.nodes.values(), key=lambda n: n.name):
                        if _matches(peer.peer_selector, other.labels):
                            calico_peer(other, family, kind, peer)
                elif peer.peer_ip and ipaddress.ip_address(peer.peer_ip).version == family:
                    _explicit_peer(plan, state, me, peer, kind, family, local_as, sessions, password)
            if (peer.peer_selector and peer.reverse_peering != "Manual"
                    and _matches(peer.peer_selector, me.labels)):
                for other in sorted(state.nodes.values(), key=lambda n: n.name):
                    if _applies_to(peer, other):
                        calico_peer(other, family, "node", peer)
    for ident, session in mesh.items():
        sessions.setdefault(ident, session)
    plan.sessions = sorted(sessions.values(), key=lambda s: (s.family, _kind_order(s.kind), s.name))
    return plan


def _kind_order(kind: str) -> int:
    return {"mesh": 0, "global": 1, "node": 2}.get(kind, 3)


def _explicit_peer(
    plan: Plan,
    state: BGPState,
    me: NodeInfo,
    peer: PeerInfo,
    kind: str,
    family: int,
    local_as: int,
    sessions: dict[tuple[int, str, int | None], Session],
    password: Callable[[tuple[str, str] | None, str], tuple[bool, str | None]],
) -> None:
    assert peer.peer_ip is not None
    my_ip = _addr(me, family)
    ip = str(ipaddress.ip_address(peer.peer_ip))
    if ip == my_ip:
        return  # never peer with ourselves
    # Is the remote one of our nodes?  Then it is passive/active as between nodes.
    remote = next((n for n in state.nodes.values() if _addr(n, family) == ip), None)
    peer_as = int(peer.as_number) if peer.as_number else (
        int(state.as_number_of(remote)) if remote else local_as)
    own_as = int(peer.local_as_number) if peer.local_as_number else local_as
    ok, pw = password(peer.password_secret, f"BGPPeer {peer.name}")
    if not ok:
        return
    rr_client = bool(
        me.rr_cluster_id and peer_as == own_as
        and (remote is None or remote.rr_cluster_id != me.rr_cluster_id)
    )
    sessions.setdefault((family, ip, peer.port), _peer_session(
        peer, kind, family, ip, peer.port, peer_as, own_as, my_ip, pw,
        passive=bool(remote) and ip > (my_ip or ""), rr_client=rr_client,
        rr_cluster_id=me.rr_cluster_id, description=peer.name,
    ))


def _peer_session(
    peer: PeerInfo,
    kind: str,
    family: int,
    ip: str,
    port: int | None,
    peer_as: int,
    local_as: int,
    my_ip: str | None,
    password: str | None,
    *,
    passive: bool,
    rr_client: bool,
    rr_cluster_id: str | None,
    description: str,
) -> Session:
    prefix = "Global" if kind == "global" else "Node"
    next_hop = {"Self": "self", "Keep": "keep"}.get(peer.next_hop_mode or "")
    return Session(
        name=proto_name(prefix, ip, port),
        kind=kind,
        family=family,
        neighbor=ip,
        peer_as=peer_as,
        local_as=local_as,
        source_address=my_ip if peer.source_address != "None" else None,
        port=port,
        passive=passive,
        rr_client=rr_client,
        rr_cluster_id=rr_cluster_id if rr_client else None,
        password=password,
        graceful_restart_time=duration_seconds(peer.max_restart_time),
        keepalive_time=duration_seconds(peer.keepalive_time),
        ttl_security=peer.ttl_security or None,
        next_hop=next_hop,
        allow_local_as=peer.num_allowed_local_as or None,
        description=f"{description} (BGPPeer {peer.name})" if description != peer.name else peer.name,
    )
