"""Node (projectcalico.org/v3): a Calico node's BGP addresses, tunnel addresses
and orchestrator references."""
from __future__ import annotations

import base64
import binascii
from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator

from datastore.models.common import (
    CIDR,
    MAC,
    ASNumber,
    CalicoModel,
    CIDRv4,
    CIDRv6,
    IPv4Addr,
    IPv6Addr,
    Resource,
)


class NodeBGPSpec(CalicoModel):
    as_number: Optional[ASNumber] = Field(None, alias="asNumber")
    ipv4_address: Optional[CIDRv4] = Field(None, alias="ipv4Address")
    ipv6_address: Optional[CIDRv6] = Field(None, alias="ipv6Address")
    ipv4_ipip_tunnel_addr: Optional[IPv4Addr] = Field(None, alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: Optional[IPv4Addr] = Field(None, alias="routeReflectorClusterID")


class OrchRef(CalicoModel):
    node_name: Optional[str] = Field(None, alias="nodeName")
    orchestrator: str


class NodeWireguardSpec(CalicoModel):
    interface_ipv4_address: Optional[IPv4Addr] = Field(None, alias="interfaceIPv4Address")
    interface_ipv6_address: Optional[IPv6Addr] = Field(None, alias="interfaceIPv6Address")


class NodeAddress(CalicoModel):
    address: CIDR
    type: Optional[Literal["CalicoNodeIP", "InternalIP", "ExternalIP"]] = None


class NodeSpec(CalicoModel):
    bgp: Optional[NodeBGPSpec] = None
    ipv4_vxlan_tunnel_addr: Optional[IPv4Addr] = Field(None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: Optional[MAC] = Field(None, alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: Optional[IPv6Addr] = Field(None, alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: Optional[MAC] = Field(None, alias="vxlanTunnelMACAddrV6")
    orch_refs: Optional[list[OrchRef]] = Field(None, alias="orchRefs")
    wireguard: Optional[NodeWireguardSpec] = None
    addresses: Optional[list[NodeAddress]] = None

    @field_validator("bgp")
    @classmethod
    def _bgp_not_empty(cls, v: Optional[NodeBGPSpec]) -> Optional[NodeBGPSpec]:
        if v is not None and not v.model_dump(exclude_none=True):
            raise ValueError("bgp should not be empty (omit it instead)")
        return v


def _check_wg_key(v: Optional[str]) -> Optional[str]:
    if v:
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"invalid WireGuard public key {v!r} (expected base64 of 32 bytes)")
    return v


class NodeStatus(CalicoModel):
    wireguard_public_key: Optional[str] = Field(None, alias="wireguardPublicKey")
    wireguard_public_key_v6: Optional[str] = Field(None, alias="wireguardPublicKeyV6")
    pod_cidrs: Optional[list[str]] = Field(None, alias="podCIDRs")

    @field_validator("wireguard_public_key", "wireguard_public_key_v6")
    @classmethod
    def _wg(cls, v: Optional[str]) -> Optional[str]:
        return _check_wg_key(v)


class Node(Resource):
    KIND: ClassVar[str] = "Node"
    NAMESPACED: ClassVar[bool] = False

    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: Optional[NodeStatus] = None
