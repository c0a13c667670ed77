"""What confd knows about the cluster's BGP settings, kept from datastore updates.

confd watches Nodes, BGPConfigurations, BGPPeers, IPPools and this node's
block affinities (:func:`watch_options`); :meth:`BGPState.apply` folds each
update into typed, validated state. An invalid resource is logged and dropped
(as if absent) so one bad object cannot stop the others from rendering.
"""
from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from datastore.keys import BlockAffinityKey, Key, ListOptions, ResourceKey
from datastore.syncer import Update

log = logging.getLogger(__name__)

DEFAULT_AS = "64512"
WATCHED_KINDS = ("Node", "BGPConfiguration", "BGPPeer", "IPPool")


def watch_options(node: str) -> list[ListOptions]:
    """The datastore prefixes confd watches (affinities: this node's only)."""
    return [ListOptions(kind) for kind in WATCHED_KINDS] + [ListOptions("BlockAffinity", host=node)]


def _ip_only(cidr: str | None) -> str | None:
    if not cidr:
        return None
    return str(ipaddress.ip_interface(cidr).ip)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    ipv4: str | None = None  # address only
    ipv4_cidr: str | None = None  # as configured (address/prefix)
    ipv6: str | None = None
    ipv6_cidr: str | None = None
    as_number: str | None = None
    rr_cluster_id: str | None = None


@dataclass(frozen=True)
class PeerInfo:
    """A BGPPeer resource, flattened."""

    name: str
    node: str | None = None
    node_selector: str | None = None
    peer_ip: str | None = None
    port: int | None = None
    as_number: str | None = None
    peer_selector: str | None = None
    password_secret: tuple[str, str] | None = None  # (secret name, key)
    source_address: str = "UseNodeIP"
    max_restart_time: str | None = None
    keepalive_time: str | None = None
    ttl_security: int | None = None
    next_hop_mode: str | None = None  # Auto | Self | Keep
    num_allowed_local_as: int | None = None
    local_as_number: str | None = None
    reverse_peering: str | None = None  # Auto (default) | Manual

    @property
    def is_global(self) -> bool:
        return not self.node and not self.node_selector


@dataclass(frozen=True)
class PoolInfo:
    name: str
    cidr: str
    disabled: bool = False
    disable_bgp_export: bool = False


@dataclass
class BGPConfigInfo:
    as_number: str | None = None
    node_mesh: bool | None = None
    listen_port: int | None = None
    log_severity: str | None = None
    node_mesh_password: tuple[str, str] | None = None
    node_mesh_max_restart_time: str | None = None
    bind_mode: str | None = None
    ignored_interfaces: list[str] | None = None


def split_peer_ip(text: str) -> tuple[str, int | None]:
    """``ip``, ``ipv4:port`` or ``[ipv6]:port`` → (ip, port)."""
    if text.startswith("["):
        ip, _, port = text[1:].partition("]:")
        return ip, int(port)
    if text.count(":") == 1:
        ip, port = text.split(":")
        return ip, int(port)
    return text, None


@dataclass
class BGPState:
    """The cluster's BGP inputs, as of the last update applied."""

    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    bgp_configs: dict[str, BGPConfigInfo] = field(default_factory=dict)
    peers: dict[str, PeerInfo] = field(default_factory=dict)
    pools: dict[str, PoolInfo] = field(default_factory=dict)
    affinities: dict[tuple[str, str], str] = field(default_factory=dict)  # (host, cidr) -> state

    # -- queries --------------------------------------------------------------

    def blocks_of(self, host: str) -> list[str]:
        """Blocks confirmed as affine to ``host`` (pending ones do not count)."""
        return sorted(
            (cidr for (h, cidr), st in self.affinities.items() if h == host and st == "confirmed"),
            key=lambda c: (ipaddress.ip_network(c).version, ipaddress.ip_network(c)),
        )

    def global_config(self) -> BGPConfigInfo:
        return self.bgp_configs.get("default") or BGPConfigInfo()

    def node_config(self, node: str) -> BGPConfigInfo:
        return self.bgp_configs.get(f"node.{node}") or BGPConfigInfo()

    def as_number_of(self, node: NodeInfo | None) -> str:
        """The node's AS, else the global BGPConfiguration's, else 64512."""
        if node is not None and node.as_number:
            return node.as_number
        return self.global_config().as_number or DEFAULT_AS

    # -- updates --------------------------------------------------------------

    def apply_all(self, updates: list[Update]) -> bool:
        changed = False
        for update in updates:
            changed |= self.apply(update.key, update.value)
        return changed

    def apply(self, key: Key, value: dict[str, Any] | None) -> bool:
        """Fold one key's new value (None = deleted) in; True if anything changed."""
        if isinstance(key, BlockAffinityKey):
            return self._apply_affinity(key, value)
        if not isinstance(key, ResourceKey):
            return False
        table: dict[str, Any]
        parsed: Any = None
        if key.kind == "Node":
            table = self.nodes
        elif key.kind == "BGPConfiguration":
            table = self.bgp_configs
        elif key.kind == "BGPPeer":
            table = self.peers
        elif key.kind == "IPPool":
            table = self.pools
        else:
            return False
        if value is not None:
            try:
                parsed = _parse(key.kind, value)
            except ValueError as exc:
                log.error("ignoring invalid %s %s: %s", key.kind, key.name, exc)
                parsed = None
        old = table.get(key.name)
        if parsed is None:
            table.pop(key.name, None)
        else:
            table[key.name] = parsed
        return bool(old != parsed)

    def _apply_affinity(self, key: BlockAffinityKey, value: dict[str, Any] | None) -> bool:
        ident = (key.host, str(ipaddress.ip_network(key.cidr, strict=False)))
        state = None
        if value is not None:
            # Old upstream wrote an empty value: that means confirmed.
            state = "confirmed" if not value else str(value.get("state", "confirmed"))
            if value.get("deleted"):
                state = None
        old = self.affinities.get(ident)
        if state is None:
            self.affinities.pop(ident, None)
        else:
            self.affinities[ident] = state
        return old != state


def _secret(password: Any) -> tuple[str, str] | None:
    ref = getattr(password, "secret_key_ref", None) if password is not None else None
    return (ref.name, ref.key) if ref is not None else None


def _parse(kind: str, value: dict[str, Any]) -> Any:
    from datastore.models import load_resource

    res: Any = load_resource(value)
    spec = res.spec
    if kind == "Node":
        bgp = spec.bgp
        return NodeInfo(
            name=res.metadata.name,
            labels=dict(res.metadata.labels or {}),
            ipv4=_ip_only(bgp.ipv4_address) if bgp else None,
            ipv4_cidr=bgp.ipv4_address if bgp else None,
            ipv6=_ip_only(bgp.ipv6_address) if bgp else None,
            ipv6_cidr=bgp.ipv6_address if bgp else None,
            as_number=str(bgp.as_number) if bgp and bgp.as_number is not None else None,
            rr_cluster_id=bgp.route_reflector_cluster_id if bgp else None,
        )
    if kind == "BGPConfiguration":
        return BGPConfigInfo(
            as_number=str(spec.as_number) if spec.as_number is not None else None,
            node_mesh=spec.node_to_node_mesh_enabled,
            listen_port=spec.listen_port,
            log_severity=spec.log_severity_screen,
            node_mesh_password=_secret(spec.node_mesh_password),
            node_mesh_max_restart_time=spec.node_mesh_max_restart_time,
            bind_mode=spec.bind_mode,
            ignored_interfaces=list(spec.ignored_interfaces) if spec.ignored_interfaces else None,
        )
    if kind == "BGPPeer":
        ip, port = split_peer_ip(spec.peer_ip) if spec.peer_ip else (None, None)
        next_hop = spec.next_hop_mode
        if next_hop is None and spec.keep_original_next_hop:
            next_hop = "Keep"
        return PeerInfo(
            name=res.metadata.name,
            node=spec.node,
            node_selector=spec.node_selector,
            peer_ip=ip,
            port=port,
            as_number=str(spec.as_number) if spec.as_number is not None else None,
            peer_selector=spec.peer_selector,
            password_secret=_secret(spec.password),
            source_address=spec.source_address or "UseNodeIP",
            max_restart_time=spec.max_restart_time,
            keepalive_time=spec.keepalive_time,
            ttl_security=spec.ttl_security,
            next_hop_mode=next_hop,
            num_allowed_local_as=spec.num_allowed_local_as_numbers,
            local_as_number=str(spec.local_as_number) if spec.local_as_number is not None else None,
            reverse_peering=spec.reverse_peering,
        )
    if kind == "IPPool":
        return PoolInfo(
            name=res.metadata.name,
            cidr=spec.cidr,
            disabled=bool(spec.disabled),
            disable_bgp_export=bool(spec.disable_bgp_export),
        )
    raise ValueError(f"unexpected kind {kind}")


def dump_state(state: BGPState) -> str:
    """A JSON summary (for debugging and ``calico-confd render --dump``)."""
    return json.dumps(
        {
            "nodes": {n: vars(v) for n, v in state.nodes.items()},
            "peers": {n: vars(v) for n, v in state.peers.items()},
            "pools": {n: vars(v) for n, v in state.pools.items()},
            "bgpConfigurations": {n: vars(v) for n, v in state.bgp_configs.items()},
            "affinities": [f"{h} {c} {s}" for (h, c), s in sorted(state.affinities.items())],
        },
        indent=2,
        default=str,
    )
