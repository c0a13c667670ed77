"""BGPConfiguration (``default`` and ``node.<name>``) and BGPPeer.

No defaults are filled in here (calicoctl stores what it is given); readers
apply upstream's: ``asNumber`` 64512, ``nodeToNodeMeshEnabled`` true,
``listenPort`` 179, ``logSeverityScreen`` Info.
"""
from __future__ import annotations

import re
from typing import ClassVar, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from datastore.models.common import (
    CIDR,
    ASNumber,
    CalicoModel,
    Duration,
    IPv4Addr,
    IPv6Addr,
    Name,
    Resource,
    Selector,
    info_get,
    json_name,
    parse_ip,
)

_LOG_LEVEL_RE = re.compile(r"^(?i:trace|debug|info|warning|error|fatal)?$")
_STD_COMMUNITY = re.compile(r"^(\d+):(\d+)$")
_LARGE_COMMUNITY = re.compile(r"^(\d+):(\d+):(\d+)$")
_IPV4_PORT = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$")
_IPV6_PORT = re.compile(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$")


def check_log_level(v: str) -> str:
    if not _LOG_LEVEL_RE.match(v):
        raise ValueError(f"invalid log severity {v!r}: one of Trace, Debug, Info, Warning, Error, Fatal")
    return v


def is_community_value(v: str) -> bool:
    """``aa:nn`` (16-bit parts) or ``aa:nn:mm`` (32-bit parts)."""
    m = _STD_COMMUNITY.match(v)
    if m:
        return all(int(x) <= 0xFFFF for x in m.groups())
    m = _LARGE_COMMUNITY.match(v)
    if m:
        return all(int(x) <= 0xFFFFFFFF for x in m.groups())
    return False


class SecretKeySelector(CalicoModel):
    name: str = ""
    key: str
    optional: Optional[bool] = None


class BGPPassword(CalicoModel):
    secret_key_ref: Optional[SecretKeySelector] = Field(None, alias="secretKeyRef")


class CIDRBlock(CalicoModel):
    cidr: Optional[CIDR] = None


class Community(CalicoModel):
    name: Name
    value: str

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        if not is_community_value(v):
            raise ValueError(f"invalid community value {v!r}: expected aa:nn (16-bit) or aa:nn:mm (32-bit)")
        return v


class PrefixAdvertisement(CalicoModel):
    cidr: CIDR
    communities: list[str]


class BGPConfigurationSpec(CalicoModel):
    log_severity_screen: Optional[str] = Field(None, alias="logSeverityScreen")
    node_to_node_mesh_enabled: Optional[bool] = Field(None, alias="nodeToNodeMeshEnabled")
    as_number: Optional[ASNumber] = Field(None, alias="asNumber")
    service_load_balancer_ips: Optional[list[CIDRBlock]] = Field(None, alias="serviceLoadBalancerIPs")
    service_external_ips: Optional[list[CIDRBlock]] = Field(None, alias="serviceExternalIPs")
    service_cluster_ips: Optional[list[CIDRBlock]] = Field(None, alias="serviceClusterIPs")
    communities: Optional[list[Community]] = None
    prefix_advertisements: Optional[list[PrefixAdvertisement]] = Field(
        None, alias="prefixAdvertisements", validate_default=True
    )
    listen_port: Optional[int] = Field(None, alias="listenPort", ge=1, le=65535)
    node_mesh_password: Optional[BGPPassword] = Field(None, alias="nodeMeshPassword")
    node_mesh_max_restart_time: Optional[Duration] = Field(None, alias="nodeMeshMaxRestartTime")
    bind_mode: Optional[Literal["None", "NodeIP"]] = Field(None, alias="bindMode")
    ignored_interfaces: Optional[list[str]] = Field(None, alias="ignoredInterfaces")
    local_workload_peering_ipv4: Optional[IPv4Addr] = Field(None, alias="localWorkloadPeeringIPV4")
    local_workload_peering_ipv6: Optional[IPv6Addr] = Field(None, alias="localWorkloadPeeringIPV6")
    service_load_balancer_aggregation: Optional[Literal["Enabled", "Disabled"]] = Field(
        None, alias="serviceLoadBalancerAggregation"
    )
    program_cluster_routes: Optional[str] = Field(None, alias="programClusterRoutes")
    ipv4_normal_route_priority: Optional[int] = Field(None, alias="ipv4NormalRoutePriority", ge=0)
    ipv6_normal_route_priority: Optional[int] = Field(None, alias="ipv6NormalRoutePriority", ge=0)
    ipv4_elevated_route_priority: Optional[int] = Field(None, alias="ipv4ElevatedRoutePriority", ge=0)
    ipv6_elevated_route_priority: Optional[int] = Field(None, alias="ipv6ElevatedRoutePriority", ge=0)

    @field_validator("log_severity_screen")
    @classmethod
    def _log(cls, v: Optional[str]) -> Optional[str]:
        return check_log_level(v) if v is not None else v

    @field_validator("prefix_advertisements")
    @classmethod
    def _prefix_ads(
        cls, v: Optional[list[PrefixAdvertisement]], info: ValidationInfo
    ) -> Optional[list[PrefixAdvertisement]]:
        names = {c.name for c in info_get(info, "communities") or ()}
        if names and not v:
            raise ValueError("communities are defined but not used in prefixAdvertisements")
        for pa in v or ():
            for c in pa.communities:
                if not is_community_value(c) and c not in names:
                    raise ValueError(f"community {c!r} for {pa.cidr} is neither a valid value nor a defined name")
        return v

    @field_validator("node_mesh_password", "node_mesh_max_restart_time")
    @classmethod
    def _needs_mesh(cls, v: object, info: ValidationInfo) -> object:
        if v is not None and info_get(info, "node_to_node_mesh_enabled") is False:
            raise ValueError(f"{json_name(cls, info.field_name)} cannot be set if nodeToNodeMeshEnabled is false")
        return v


class BGPConfiguration(Resource):
    KIND: ClassVar[str] = "BGPConfiguration"
    NAMESPACED: ClassVar[bool] = False

    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)


def check_peer_ip(v: str) -> str:
    """``<ip>``, ``<ipv4>:<port>`` or ``[<ipv6>]:<port>``."""
    ip, port = v, None
    m4, m6 = _IPV4_PORT.match(v), _IPV6_PORT.match(v)
    if m4:
        ip, port = v.rsplit(":", 1)
    elif m6:
        ip, port = m6.group(1), m6.group(2)
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid peer port in {v!r}")
    try:
        parse_ip(ip)
    except ValueError:
        raise ValueError(f"invalid peerIP {v!r}: expected <IP>, <IPv4>:<port> or [<IPv6>]:<port>") from None
    return v


class BGPPeerSpec(CalicoModel):
    node: Optional[Name] = None
    node_selector: Optional[Selector] = Field(None, alias="nodeSelector")
    peer_ip: Optional[str] = Field(None, alias="peerIP")
    as_number: Optional[ASNumber] = Field(None, alias="asNumber")
    peer_selector: Optional[Selector] = Field(None, alias="peerSelector")
    keep_original_next_hop: Optional[bool] = Field(None, alias="keepOriginalNextHop")
    next_hop_mode: Optional[Literal["Auto", "Self", "Keep"]] = Field(None, alias="nextHopMode")
    password: Optional[BGPPassword] = None
    source_address: Optional[Literal["UseNodeIP", "None"]] = Field(None, alias="sourceAddress")
    max_restart_time: Optional[Duration] = Field(None, alias="maxRestartTime")
    num_allowed_local_as_numbers: Optional[int] = Field(None, alias="numAllowedLocalASNumbers", ge=0)
    ttl_security: Optional[int] = Field(None, alias="ttlSecurity", ge=0, le=255)
    keepalive_time: Optional[Duration] = Field(None, alias="keepaliveTime")
    reachable_by: Optional[str] = Field(None, alias="reachableBy")
    filters: Optional[list[Name]] = None
    local_as_number: Optional[ASNumber] = Field(None, alias="localASNumber")
    local_workload_selector: Optional[Selector] = Field(None, alias="localWorkloadSelector")
    reverse_peering: Optional[Literal["Auto", "Manual"]] = Field(None, alias="reversePeering")

    @field_validator("node_selector")
    @classmethod
    def _node_xor_selector(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v and info_get(info, "node"):
            raise ValueError("node must be empty when nodeSelector is specified")
        return v

    @field_validator("peer_ip")
    @classmethod
    def _peer_ip(cls, v: Optional[str]) -> Optional[str]:
        return check_peer_ip(v) if v else v

    @field_validator("peer_selector")
    @classmethod
    def _peer_selector(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v and info_get(info, "peer_ip"):
            raise ValueError("peerIP must be empty when peerSelector is specified")
        if v and info_get(info, "as_number"):
            raise ValueError("asNumber must be empty when peerSelector is specified")
        return v

    @field_validator("reachable_by")
    @classmethod
    def _reachable_by(cls, v: Optional[str]) -> Optional[str]:
        if v:
            parse_ip(v)
        return v


class BGPPeer(Resource):
    KIND: ClassVar[str] = "BGPPeer"
    NAMESPACED: ClassVar[bool] = False

    spec: BGPPeerSpec = Field(default_factory=BGPPeerSpec)
