"""WorkloadEndpoint (namespaced) and HostEndpoint (cluster-scoped)."""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import Field, ValidationInfo, field_validator

from datastore.models.common import (
    CIDR,
    MAC,
    CalicoModel,
    ContainerID,
    IPAddr,
    IPv4Addr,
    IPv6Addr,
    Name,
    Net,
    PortName,
    Protocol,
    Resource,
    Uint16,
    check_interface,
    check_net,
    check_port_name,
    info_get,
    parse_cidr_or_ip,
    protocol_supports_ports,
)


def _port_protocol(v: Any) -> Any:
    if not protocol_supports_ports(v):
        raise ValueError(f"protocol {v!r} does not support ports (use TCP, UDP or SCTP)")
    return v


class WorkloadEndpointPort(CalicoModel):
    """A named or host-mapped port.  Upstream always serialises every field."""

    name: str = ""
    protocol: Protocol
    port: int = Field(ge=1, le=65535)
    host_port: Uint16 = Field(0, alias="hostPort", validate_default=True)
    host_ip: str = Field("", alias="hostIP")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_port_name(v) if v else v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return _port_protocol(v)

    @field_validator("host_port")
    @classmethod
    def _host_port(cls, v: int, info: ValidationInfo) -> int:
        if v == 0 and info_get(info, "name", "x") == "":
            raise ValueError("a port needs a name unless hostPort is set")
        return v

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, v: str) -> str:
        if v:
            check_net(v)
        return v


class IPNAT(CalicoModel):
    internal_ip: IPAddr = Field(alias="internalIP")
    external_ip: IPAddr = Field(alias="externalIP")

    @field_validator("external_ip")
    @classmethod
    def _same_version(cls, v: str, info: ValidationInfo) -> str:
        internal = info_get(info, "internal_ip")
        if internal and parse_cidr_or_ip(internal)[0].version != parse_cidr_or_ip(v)[0].version:
            raise ValueError("internalIP and externalIP must be the same IP version")
        return v


class WorkloadEndpointSpec(CalicoModel):
    orchestrator: Optional[Name] = None
    workload: Optional[Name] = None
    node: Optional[Name] = None
    container_id: Optional[ContainerID] = Field(None, alias="containerID")
    pod: Optional[Name] = None
    endpoint: Optional[Name] = None
    service_account_name: Optional[Name] = Field(None, alias="serviceAccountName")
    ip_networks: Optional[list[Net]] = Field(None, alias="ipNetworks")
    ip_nats: Optional[list[IPNAT]] = Field(None, alias="ipNATs")
    ipv4_gateway: Optional[IPv4Addr] = Field(None, alias="ipv4Gateway")
    ipv6_gateway: Optional[IPv6Addr] = Field(None, alias="ipv6Gateway")
    profiles: Optional[list[Name]] = None
    interface_name: Optional[str] = Field(None, alias="interfaceName")
    mac: Optional[MAC] = None
    ports: Optional[list[WorkloadEndpointPort]] = None
    allow_spoofed_source_prefixes: Optional[list[CIDR]] = Field(None, alias="allowSpoofedSourcePrefixes")
    # Newer upstream: per-endpoint QoS limits (bandwidth, packet rate, connections).
    qos_controls: Optional[dict[str, Any]] = Field(None, alias="qosControls")

    @field_validator("ip_networks")
    @classmethod
    def _single_addresses(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        for n in v or ():
            _, net = parse_cidr_or_ip(n)
            if net.num_addresses != 1:
                raise ValueError(f"IP network {n!r} contains multiple addresses (only /32 and /128 are supported)")
        return v

    @field_validator("ip_nats")
    @classmethod
    def _nats_in_networks(cls, v: Optional[list[IPNAT]], info: ValidationInfo) -> Optional[list[IPNAT]]:
        nets = [parse_cidr_or_ip(n)[1] for n in info_get(info, "ip_networks") or ()]
        for nat in v or ():
            ip = parse_cidr_or_ip(nat.internal_ip)[0]
            if not any(ip in n for n in nets if n.version == ip.version):
                raise ValueError(f"NAT internalIP {nat.internal_ip} is not in the endpoint's ipNetworks")
        return v

    @field_validator("interface_name")
    @classmethod
    def _iface(cls, v: Optional[str]) -> Optional[str]:
        return check_interface(v) if v is not None else v


class WorkloadEndpoint(Resource):
    KIND: ClassVar[str] = "WorkloadEndpoint"
    NAMESPACED: ClassVar[bool] = True

    spec: WorkloadEndpointSpec = Field(default_factory=WorkloadEndpointSpec)


class EndpointPort(CalicoModel):
    name: PortName
    protocol: Protocol
    port: int = Field(ge=1, le=65535)

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return _port_protocol(v)


class HostEndpointSpec(CalicoModel):
    node: Name
    interface_name: Optional[str] = Field(None, alias="interfaceName")
    expected_ips: Optional[list[IPAddr]] = Field(None, alias="expectedIPs", validate_default=True)
    profiles: Optional[list[Name]] = None
    ports: Optional[list[EndpointPort]] = None

    @field_validator("interface_name")
    @classmethod
    def _iface(cls, v: Optional[str]) -> Optional[str]:
        return check_interface(v, allow_star=True) if v else v

    @field_validator("expected_ips")
    @classmethod
    def _iface_or_ips(cls, v: Optional[list[str]], info: ValidationInfo) -> Optional[list[str]]:
        if not v and not info_get(info, "interface_name"):
            raise ValueError("a host endpoint needs an interfaceName or expectedIPs")
        return v


class HostEndpoint(Resource):
    KIND: ClassVar[str] = "HostEndpoint"
    NAMESPACED: ClassVar[bool] = False

    spec: HostEndpointSpec
