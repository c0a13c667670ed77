"""IPAM: the IPAMConfiguration resource and the IPAM objects Calico IPAM keeps
in etcd, in upstream's exact JSON (libcalico-go ``lib/backend/model``):

* :class:`AllocationBlock` at ``/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26``
* :class:`BlockAffinity` at ``/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26``
* :class:`IPAMHandle` at ``/calico/ipam/v2/handle/<id>``
* :class:`IPAMConfigValue` at ``/calico/ipam/v2/config``

These value models are not resources (no apiVersion/metadata).  They keep
unknown fields (written by newer upstream versions) so a read-modify-write
does not lose them.  Use :meth:`IPAMValue.to_dict` / :meth:`IPAMValue.to_json`
to serialise them: unlike resources they keep upstream's explicit nulls.

The CNI path (calico / calico-ipam) reads and writes these values with the
pydantic-free twins in :mod:`ipam.values`, which hand anything unusual to the
models here; a change to a model needs the same change there
(tests/ipam/test_values.py compares the two).
"""
from __future__ import annotations

import ipaddress
import json
import time
from typing import Any, ClassVar, Literal, Optional, Self, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from datastore.models.common import CalicoModel, ObjectMeta, Resource, Timestamp, info_get

# --------------------------------------------------------------------------
# IPAMConfiguration resource.
# --------------------------------------------------------------------------

DEFAULT_MAX_BLOCKS_PER_HOST = 20  # what maxBlocksPerHost 0 means to the allocator


class IPAMConfigurationSpec(CalicoModel):
    strict_affinity: bool = Field(False, alias="strictAffinity")
    auto_allocate_blocks: bool = Field(True, alias="autoAllocateBlocks", validate_default=True)
    max_blocks_per_host: Optional[int] = Field(None, alias="maxBlocksPerHost", ge=0, le=2147483647)
    # Newer upstream knobs (calicoctl ipam configure --kubevirt-ip-persistence / --ip-cooldown-seconds).
    kubevirt_vm_address_persistence: Optional[Literal["Enabled", "Disabled"]] = Field(
        None, alias="kubeVirtVMAddressPersistence"
    )
    ip_cooldown_seconds: Optional[int] = Field(None, alias="ipCooldownSeconds", ge=0, le=1200)

    @field_validator("auto_allocate_blocks")
    @classmethod
    def _auto(cls, v: bool, info: ValidationInfo) -> bool:
        if not v and info_get(info, "strict_affinity") is False:
            raise ValueError("cannot disable both strictAffinity and autoAllocateBlocks")
        return v

    @field_validator("max_blocks_per_host")
    @classmethod
    def _max_blocks(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v and info_get(info, "strict_affinity") is False:
            raise ValueError("maxBlocksPerHost requires strictAffinity to be enabled")
        return v

    @property
    def effective_max_blocks_per_host(self) -> int:
        return self.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST


class IPAMConfiguration(Resource):
    KIND: ClassVar[str] = "IPAMConfiguration"
    NAMESPACED: ClassVar[bool] = False

    spec: IPAMConfigurationSpec = Field(default_factory=IPAMConfigurationSpec)

    @classmethod
    def check_metadata(cls, m: ObjectMeta) -> None:
        if m.name != "default":
            raise ValueError("metadata.name of an IPAMConfiguration must be 'default'")


# --------------------------------------------------------------------------
# IPAM values.
# --------------------------------------------------------------------------


class IPAMValue(BaseModel):
    """Base for IPAM values: upstream JSON names, unknown fields preserved."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    # Fields serialised even when None (upstream writes them as JSON null).
    _KEEP_NULL: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls.model_validate(d)

    @classmethod
    def from_json(cls, raw: Union[str, bytes]) -> Self:
        return cls.model_validate_json(raw)

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for alias in self._KEEP_NULL:
            out.setdefault(alias, None)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


class AllocationAttribute(IPAMValue):
    handle_id: Optional[str] = None
    secondary: Optional[dict[str, str]] = None
    alternate: Optional[dict[str, str]] = None
    # Stamped on release when ipCooldownSeconds is set (newer upstream).
    released_at: Optional[Timestamp] = Field(None, alias="releasedAt")


def _check_affinity(v: Optional[str]) -> Optional[str]:
    if v is not None:
        kind, colon, owner = v.partition(":")
        if kind not in ("host", "virtual") or not colon or not owner:
            raise ValueError(f"invalid affinity {v!r}: expected 'host:<node>' or 'virtual:<name>'")
    return v


class AllocationBlock(IPAMValue):
    _KEEP_NULL: ClassVar[tuple[str, ...]] = ("affinity",)

    cidr: str
    affinity: Optional[str] = None
    affinity_claim_time: Optional[Timestamp] = None
    allocations: list[Optional[int]]
    unallocated: list[int]
    attributes: list[AllocationAttribute] = Field(default_factory=list)
    sequence_number: int = Field(0, alias="sequenceNumber", ge=0)
    sequence_number_for_allocation: dict[str, int] = Field(default_factory=dict, alias="sequenceNumberForAllocation")
    deleted: bool = False
    # Deprecated upstream form of affinity ("hostAffinity": "<node>"); kept if present.
    host_affinity: Optional[str] = Field(None, alias="hostAffinity")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=True))
        except ValueError:
            raise ValueError(f"invalid block CIDR {v!r}") from None

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, v: Optional[str]) -> Optional[str]:
        return _check_affinity(v)

    @field_validator("allocations")
    @classmethod
    def _allocations(cls, v: list[Optional[int]], info: ValidationInfo) -> list[Optional[int]]:
        cidr = info_get(info, "cidr")
        if cidr is not None:
            size = ipaddress.ip_network(cidr).num_addresses
            if len(v) != size:
                raise ValueError(f"block {cidr} needs {size} allocation entries, got {len(v)}")
        return v

    @field_validator("unallocated")
    @classmethod
    def _unallocated(cls, v: list[int], info: ValidationInfo) -> list[int]:
        allocations = info_get(info, "allocations")
        if allocations is not None:
            for o in v:
                if not 0 <= o < len(allocations):
                    raise ValueError(f"unallocated ordinal {o} outside the block")
        return v

    @field_validator("sequence_number_for_allocation", mode="before")
    @classmethod
    def _null_map(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("attributes", mode="before")
    @classmethod
    def _null_list(cls, v: Any) -> Any:
        return [] if v is None else v

    @classmethod
    def new(
        cls,
        cidr: str,
        affinity: Optional[str] = None,
        claim_time: Optional[str] = None,
        sequence_number: Optional[int] = None,
    ) -> Self:
        """An empty block: every ordinal free, in order."""
        net = ipaddress.ip_network(cidr, strict=True)
        n = net.num_addresses
        return cls(
            cidr=str(net),
            affinity=affinity,
            affinity_claim_time=claim_time,
            allocations=[None] * n,
            unallocated=list(range(n)),
            attributes=[],
            sequence_number=time.time_ns() if sequence_number is None else sequence_number,
            sequence_number_for_allocation={},
            deleted=False,
        )

    @property
    def network(self) -> Union[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        return ipaddress.ip_network(self.cidr)

    @property
    def host(self) -> str:
        """The node (or virtual owner) this block is affine to, or ''."""
        if self.affinity:
            return self.affinity.partition(":")[2]
        return ""

    def ordinal_to_ip(self, ordinal: int) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
        return self.network.network_address + ordinal

    def ip_to_ordinal(self, ip: str) -> int:
        ordinal = int(ipaddress.ip_address(ip)) - int(self.network.network_address)
        if not 0 <= ordinal < len(self.allocations):
            raise ValueError(f"IP {ip} not in block {self.cidr}")
        return ordinal

    def in_use(self) -> int:
        return sum(1 for a in self.allocations if a is not None)


class BlockAffinity(IPAMValue):
    state: Literal["pending", "confirmed", "pendingDeletion"] = "confirmed"
    deleted: bool = False

    @classmethod
    def from_json(cls, raw: Union[str, bytes]) -> Self:
        """Old upstream versions stored an empty value: that means confirmed."""
        if not raw or not raw.strip():
            return cls()
        return cls.model_validate_json(raw)


class IPAMHandle(IPAMValue):
    # Not part of the stored JSON (upstream ``json:"-"``): it is the key's last segment.
    handle_id: Optional[str] = Field(None, alias="handleID", exclude=True)
    block: dict[str, int] = Field(default_factory=dict)
    deleted: bool = False

    @field_validator("block", mode="before")
    @classmethod
    def _null_map(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("block")
    @classmethod
    def _counts(cls, v: dict[str, int]) -> dict[str, int]:
        for cidr, count in v.items():
            if count < 0:
                raise ValueError(f"negative allocation count {count} for block {cidr}")
        return v


class IPAMConfigValue(IPAMValue):
    """The etcd IPAM config (``/calico/ipam/v2/config``): upstream writes it with
    omitempty, so false/zero fields are absent (and read back as false/zero)."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = False
    max_blocks_per_host: int = Field(0, alias="maxBlocksPerHost", ge=0)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in ("strict_affinity", "auto_allocate_blocks", "maxBlocksPerHost"):
            if not out.get(key):
                out.pop(key, None)
        return out

    def to_spec(self) -> IPAMConfigurationSpec:
        return IPAMConfigurationSpec(
            strict_affinity=self.strict_affinity,
            auto_allocate_blocks=self.auto_allocate_blocks,
            max_blocks_per_host=self.max_blocks_per_host or None,
        )

    @classmethod
    def from_spec(cls, spec: IPAMConfigurationSpec) -> Self:
        return cls(
            strict_affinity=spec.strict_affinity,
            auto_allocate_blocks=spec.auto_allocate_blocks,
            max_blocks_per_host=spec.max_blocks_per_host or 0,
        )
