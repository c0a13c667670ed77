"""IPPool (projectcalico.org/v3), with upstream's defaulting and validation.

Defaults applied on every load (upstream applies them on create and on read):
``blockSize`` 26 (IPv4) / 122 (IPv6), ``ipipMode`` and ``vxlanMode`` Never,
``nodeSelector`` ``all()``, ``allowedUses`` [Workload, Tunnel],
``assignmentMode`` Automatic.  The CIDR is written in canonical form and must
be strictly masked, outside 169.254.0.0/16 and fe80::/10.

IPAM on the CNI path checks the plain form of a pool without pydantic
(``ipam.pools._plain_pool``) and hands anything else to this model; a rule
changed here needs the same change there (tests/ipam/test_values.py).
"""
from __future__ import annotations

import ipaddress
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from datastore.models.common import CalicoModel, Resource, Selector, info_get

EncapMode = Literal["Never", "Always", "CrossSubnet"]
AllowedUse = Literal["Workload", "Tunnel", "LoadBalancer"]

_V4_LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")
_V6_LINK_LOCAL = ipaddress.ip_network("fe80::/10")
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}


def _pool_net(info: ValidationInfo) -> Optional[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    cidr = info_get(info, "cidr")
    return ipaddress.ip_network(cidr) if cidr else None


class IPPoolSpec(CalicoModel):
    cidr: str
    vxlan_mode: EncapMode = Field("Never", alias="vxlanMode")
    ipip_mode: EncapMode = Field("Never", alias="ipipMode", validate_default=True)
    nat_outgoing: Optional[bool] = Field(None, alias="natOutgoing")
    disabled: Optional[bool] = None
    disable_bgp_export: Optional[bool] = Field(None, alias="disableBGPExport")
    block_size: Optional[int] = Field(None, alias="blockSize", validate_default=True)
    node_selector: Selector = Field("all()", alias="nodeSelector")
    namespace_selector: Optional[Selector] = Field(None, alias="namespaceSelector")
    allowed_uses: list[AllowedUse] = Field(
        default_factory=lambda: ["Workload", "Tunnel"], alias="allowedUses", validate_default=True
    )
    assignment_mode: Literal["Automatic", "Manual"] = Field("Automatic", alias="assignmentMode")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"IP pool CIDR {v!r} must be a subnet (address/prefix)")
        try:
            loose = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"IP pool CIDR {v!r} must be a valid subnet") from None
        if loose.network_address != ipaddress.ip_address(v.split("/", 1)[0]):
            raise ValueError(f"IP pool CIDR {v!r} is not strictly masked (did you mean {loose}?)")
        link_local = _V4_LINK_LOCAL if loose.version == 4 else _V6_LINK_LOCAL
        if loose.overlaps(link_local):
            raise ValueError(f"IP pool CIDR {v!r} overlaps with the link-local range {link_local}")
        return str(loose)

    @field_validator("ipip_mode")
    @classmethod
    def _ipip(cls, v: str, info: ValidationInfo) -> str:
        net = _pool_net(info)
        if v != "Never" and net is not None and net.version == 6:
            raise ValueError("ipipMode other than 'Never' is not supported on an IPv6 pool")
        if v != "Never" and info_get(info, "vxlan_mode", "Never") != "Never":
            raise ValueError("ipipMode and vxlanMode cannot both be enabled on the same pool")
        return v

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        net = _pool_net(info)
        if net is None:
            return v
        if v is None or v == 0:
            return DEFAULT_BLOCK_SIZE[net.version]
        lo, hi = BLOCK_SIZE_RANGE[net.version]
        if not lo <= v <= hi:
            raise ValueError(f"IPv{net.version} block size must be between {lo} and {hi}, not {v}")
        if not info_get(info, "disabled") and net.prefixlen > v:
            raise ValueError(
                f"pool {net} is smaller than the block size /{v}: the pool prefix must be <= blockSize"
            )
        return v

    @field_validator("allowed_uses")
    @classmethod
    def _allowed_uses(cls, v: list[str]) -> list[str]:
        if not v:
            return ["Workload", "Tunnel"]
        if len(set(v)) != len(v):
            raise ValueError("allowedUses contains duplicates")
        return v

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


class IPPool(Resource):
    KIND: ClassVar[str] = "IPPool"
    NAMESPACED: ClassVar[bool] = False

    spec: IPPoolSpec
    status: Optional[dict[str, Any]] = None
