"""Light IPAM values for the CNI hot path: no pydantic.

The stored JSON is exactly that of the pydantic models in
:mod:`datastore.models.ipam` (which stay the reference, and what calicoctl
and the checker use). Reading is two-tier:

* the *plain* form, what pycalico and upstream write (canonical types, the
  JSON names, no surprises), is checked and parsed here with the stdlib;
* anything else (a missing or mistyped field, a Python-name key, a value the
  model would coerce or reject) goes through the pydantic model, which
  raises its ValidationError (a ValueError) or normalises the document, and
  the normalised dump is parsed here.

So a document is accepted, normalised and re-serialised exactly as before,
while the common case never imports pydantic. ``to_dict`` reproduces the
model dump: declared fields in order (``None`` omitted), unknown fields kept
(top-level ``None`` ones dropped), ``affinity`` kept as an explicit null.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import Any, Optional, Union

DEFAULT_MAX_BLOCKS_PER_HOST = 20  # what maxBlocksPerHost 0 means to the allocator

log = logging.getLogger(__name__)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class _Unplain(Exception):
    """The document is not in the plain form: let the pydantic model decide."""


def _model(name: str) -> Any:
    from datastore.models import ipam as models  # pydantic: only for unusual documents

    return getattr(models, name)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _str_or_none(v: Any) -> Optional[str]:
    if v is None or type(v) is str:
        return v
    raise _Unplain


def _str_map(v: Any) -> Optional[dict[str, str]]:
    if v is None:
        return None
    if type(v) is not dict or not all(type(k) is str and type(x) is str for k, x in v.items()):
        raise _Unplain
    return dict(v)


def _extras(d: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


def _dump_extras(out: dict[str, Any], extras: dict[str, Any]) -> None:
    for k, v in extras.items():
        if v is not None:
            out[k] = v


class _Value:
    """from_dict / from_json / to_dict / to_json like :class:`IPAMValue`."""

    MODEL = ""

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: Any) -> Any:
        if type(d) is dict:
            try:
                return cls._plain(d)
            except _Unplain:
                pass
        log.debug("%s not in the plain form: validating it with the pydantic model", cls.MODEL)
        # Through the reference model: raises its ValidationError, or normalises.
        return cls._from_model(_model(cls.MODEL).from_dict(d))

    @classmethod
    def from_json(cls, raw: Union[str, bytes]) -> Any:
        try:
            d = json.loads(raw)
            if type(d) is dict:
                return cls._plain(d)
        except (ValueError, _Unplain):
            pass
        log.debug("%s not in the plain form: validating it with the pydantic model", cls.MODEL)
        # The model reports JSON errors and decides on unusual documents.
        return cls._from_model(_model(cls.MODEL).from_json(raw))

    @classmethod
    def _from_model(cls, ref: Any) -> Any:
        """From the model's normalised dump."""
        return cls._plain(ref.to_dict())

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        """Equal when they store the same JSON (also against the pydantic model)."""
        to_dict = getattr(other, "to_dict", None)
        if to_dict is None or not (isinstance(other, _Value) or type(other).__name__ == type(self).__name__):
            return NotImplemented
        return bool(self.to_dict() == to_dict())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


# --------------------------------------------------------------------------
# Allocation blocks.
# --------------------------------------------------------------------------


class AllocationAttribute(_Value):
    MODEL = "AllocationAttribute"
    _KNOWN = frozenset({"handle_id", "secondary", "alternate", "releasedAt"})
    __slots__ = ("handle_id", "secondary", "alternate", "released_at", "extras")

    def __init__(self, handle_id: Optional[str] = None, secondary: Optional[dict[str, str]] = None,
                 alternate: Optional[dict[str, str]] = None, released_at: Optional[str] = None,
                 extras: Optional[dict[str, Any]] = None) -> None:
        self.handle_id = handle_id
        self.secondary = secondary
        self.alternate = alternate
        self.released_at = released_at
        self.extras = extras or {}

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> "AllocationAttribute":
        if "released_at" in d:
            raise _Unplain
        return cls(_str_or_none(d.get("handle_id")), _str_map(d.get("secondary")), _str_map(d.get("alternate")),
                   _str_or_none(d.get("releasedAt")), _extras(d, cls._KNOWN))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.handle_id is not None:
            out["handle_id"] = self.handle_id
        if self.secondary is not None:
            out["secondary"] = self.secondary
        if self.alternate is not None:
            out["alternate"] = self.alternate
        if self.released_at is not None:
            out["releasedAt"] = self.released_at
        _dump_extras(out, self.extras)
        return out


def _check_affinity(v: Any) -> Optional[str]:
    v = _str_or_none(v)
    if v is not None:
        kind, colon, owner = v.partition(":")
        if kind not in ("host", "virtual") or not colon or not owner:
            raise _Unplain
    return v


class AllocationBlock(_Value):
    MODEL = "AllocationBlock"
    _KNOWN = frozenset({"cidr", "affinity", "affinity_claim_time", "allocations", "unallocated", "attributes",
                        "sequenceNumber", "sequenceNumberForAllocation", "deleted", "hostAffinity"})
    _PY_NAMES = ("sequence_number", "sequence_number_for_allocation", "host_affinity")
    __slots__ = ("cidr", "affinity", "affinity_claim_time", "allocations", "unallocated", "attributes",
                 "sequence_number", "sequence_number_for_allocation", "deleted", "host_affinity", "extras",
                 "_network")

    def __init__(self, cidr: str, allocations: list[Optional[int]], unallocated: list[int],
                 affinity: Optional[str] = None, affinity_claim_time: Optional[str] = None,
                 attributes: Optional[list[AllocationAttribute]] = None, sequence_number: int = 0,
                 sequence_number_for_allocation: Optional[dict[str, int]] = None, deleted: bool = False,
                 host_affinity: Optional[str] = None, extras: Optional[dict[str, Any]] = None) -> None:
        self.cidr = cidr
        self.affinity = affinity
        self.affinity_claim_time = affinity_claim_time
        self.allocations = allocations
        self.unallocated = unallocated
        self.attributes = attributes if attributes is not None else []
        self.sequence_number = sequence_number
        self.sequence_number_for_allocation = sequence_number_for_allocation or {}
        self.deleted = deleted
        self.host_affinity = host_affinity
        self.extras = extras or {}
        self._network: Optional[IPNetwork] = None

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> "AllocationBlock":
        if any(k in d for k in cls._PY_NAMES):
            raise _Unplain
        cidr = d.get("cidr")
        allocations = d.get("allocations")
        unallocated = d.get("unallocated")
        if type(cidr) is not str or type(allocations) is not list or type(unallocated) is not list:
            raise _Unplain
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            raise _Unplain from None
        if len(allocations) != net.num_addresses:
            raise _Unplain
        if not all(a is None or _is_int(a) for a in allocations):
            raise _Unplain
        size = len(allocations)
        if not all(_is_int(o) and 0 <= o < size for o in unallocated):
            raise _Unplain
        raw_attrs = d.get("attributes")
        if raw_attrs is None:
            raw_attrs = []
        if type(raw_attrs) is not list or not all(type(a) is dict for a in raw_attrs):
            raise _Unplain
        seq = d.get("sequenceNumber", 0)
        if not _is_int(seq) or seq < 0:
            raise _Unplain
        seq_for = d.get("sequenceNumberForAllocation")
        if seq_for is None:
            seq_for = {}
        if type(seq_for) is not dict or not all(type(k) is str and _is_int(v) for k, v in seq_for.items()):
            raise _Unplain
        deleted = d.get("deleted", False)
        if type(deleted) is not bool:
            raise _Unplain
        block = cls(
            cidr=str(net),
            allocations=list(allocations),
            unallocated=list(unallocated),
            affinity=_check_affinity(d.get("affinity")),
            affinity_claim_time=_str_or_none(d.get("affinity_claim_time")),
            attributes=[AllocationAttribute._plain(a) for a in raw_attrs],
            sequence_number=seq,
            sequence_number_for_allocation=dict(seq_for),
            deleted=deleted,
            host_affinity=_str_or_none(d.get("hostAffinity")),
            extras=_extras(d, cls._KNOWN),
        )
        block._network = net
        return block

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": self.cidr}
        if self.affinity is not None:
            out["affinity"] = self.affinity
        if self.affinity_claim_time is not None:
            out["affinity_claim_time"] = self.affinity_claim_time
        out["allocations"] = list(self.allocations)
        out["unallocated"] = list(self.unallocated)
        out["attributes"] = [a.to_dict() for a in self.attributes]
        out["sequenceNumber"] = self.sequence_number
        out["sequenceNumberForAllocation"] = dict(self.sequence_number_for_allocation)
        out["deleted"] = self.deleted
        if self.host_affinity is not None:
            out["hostAffinity"] = self.host_affinity
        _dump_extras(out, self.extras)
        out.setdefault("affinity", None)  # upstream writes a null affinity
        return out

    @classmethod
    def new(cls, cidr: str, affinity: Optional[str] = None, claim_time: Optional[str] = None,
            sequence_number: Optional[int] = None) -> "AllocationBlock":
        """An empty block: every ordinal free, in order."""
        net = ipaddress.ip_network(cidr, strict=True)
        if affinity is not None:
            kind, colon, owner = affinity.partition(":")
            if kind not in ("host", "virtual") or not colon or not owner:
                raise ValueError(f"invalid affinity {affinity!r}: expected 'host:<node>' or 'virtual:<name>'")
        n = net.num_addresses
        block = cls(cidr=str(net), allocations=[None] * n, unallocated=list(range(n)), affinity=affinity,
                    affinity_claim_time=claim_time,
                    sequence_number=time.time_ns() if sequence_number is None else sequence_number)
        block._network = net
        return block

    @staticmethod
    def new_attribute(handle_id: Optional[str], secondary: Optional[dict[str, str]]) -> AllocationAttribute:
        return AllocationAttribute(handle_id=handle_id, secondary=secondary)

    @property
    def network(self) -> IPNetwork:
        if self._network is None:
            self._network = ipaddress.ip_network(self.cidr)
        return self._network

    @property
    def host(self) -> str:
        """The node (or virtual owner) this block is affine to, or ''."""
        return self.affinity.partition(":")[2] if self.affinity else ""

    def ordinal_to_ip(self, ordinal: int) -> IPAddress:
        return self.network.network_address + ordinal

    def ip_to_ordinal(self, ip: str) -> int:
        ordinal = int(ipaddress.ip_address(ip)) - int(self.network.network_address)
        if not 0 <= ordinal < len(self.allocations):
            raise ValueError(f"IP {ip} not in block {self.cidr}")
        return ordinal

    def in_use(self) -> int:
        return sum(1 for a in self.allocations if a is not None)


# --------------------------------------------------------------------------
# Affinities, handles, config.
# --------------------------------------------------------------------------

AFFINITY_STATES = ("pending", "confirmed", "pendingDeletion")


class BlockAffinity(_Value):
    MODEL = "BlockAffinity"
    __slots__ = ("state", "deleted", "extras")

    def __init__(self, state: str = "confirmed", deleted: bool = False,
                 extras: Optional[dict[str, Any]] = None) -> None:
        if state not in AFFINITY_STATES:
            raise ValueError(f"invalid affinity state {state!r}")
        self.state = state
        self.deleted = deleted
        self.extras = extras or {}

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> "BlockAffinity":
        state = d.get("state", "confirmed")
        deleted = d.get("deleted", False)
        if state not in AFFINITY_STATES or type(state) is not str or type(deleted) is not bool:
            raise _Unplain
        return cls(state, deleted, _extras(d, frozenset({"state", "deleted"})))

    @classmethod
    def from_json(cls, raw: Union[str, bytes]) -> "BlockAffinity":
        """Old upstream versions stored an empty value: that means confirmed."""
        if not raw or not raw.strip():
            return cls()
        return super().from_json(raw)  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "deleted": self.deleted}
        _dump_extras(out, self.extras)
        return out


class IPAMHandle(_Value):
    """``handle_id`` is not stored (upstream ``json:"-"``): it is the key's last segment."""

    MODEL = "IPAMHandle"
    __slots__ = ("handle_id", "block", "deleted", "extras")

    def __init__(self, handle_id: Optional[str] = None, block: Optional[dict[str, int]] = None,
                 deleted: bool = False, extras: Optional[dict[str, Any]] = None) -> None:
        self.handle_id = handle_id
        self.block = block if block is not None else {}
        self.deleted = deleted
        self.extras = extras or {}

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> "IPAMHandle":
        # The Kubernetes datastore's IPAMHandle spec carries handleID: read, never written.
        handle_id = _str_or_none(d.get("handleID"))
        if "handle_id" in d:
            raise _Unplain
        block = d.get("block")
        if block is None:
            block = {}
        if type(block) is not dict or not all(type(k) is str and _is_int(v) and v >= 0 for k, v in block.items()):
            raise _Unplain
        deleted = d.get("deleted", False)
        if type(deleted) is not bool:
            raise _Unplain
        return cls(handle_id, dict(block), deleted, _extras(d, frozenset({"block", "deleted", "handleID"})))

    @classmethod
    def _from_model(cls, ref: Any) -> "IPAMHandle":
        handle = cls._plain(ref.to_dict())
        handle.handle_id = ref.handle_id  # not in the dump
        return handle

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"block": dict(self.block), "deleted": self.deleted}
        _dump_extras(out, self.extras)
        return out


class IPAMConfigValue(_Value):
    """``/calico/ipam/v2/config``: false/zero fields are absent (upstream omitempty)."""

    MODEL = "IPAMConfigValue"
    _KNOWN = frozenset({"strict_affinity", "auto_allocate_blocks", "maxBlocksPerHost"})
    __slots__ = ("strict_affinity", "auto_allocate_blocks", "max_blocks_per_host", "extras")

    def __init__(self, strict_affinity: bool = False, auto_allocate_blocks: bool = False,
                 max_blocks_per_host: int = 0, extras: Optional[dict[str, Any]] = None) -> None:
        self.strict_affinity = strict_affinity
        self.auto_allocate_blocks = auto_allocate_blocks
        self.max_blocks_per_host = max_blocks_per_host
        self.extras = extras or {}

    @classmethod
    def _plain(cls, d: dict[str, Any]) -> "IPAMConfigValue":
        if "max_blocks_per_host" in d:
            raise _Unplain
        strict = d.get("strict_affinity", False)
        auto = d.get("auto_allocate_blocks", False)
        max_blocks = d.get("maxBlocksPerHost", 0)
        if type(strict) is not bool or type(auto) is not bool or not _is_int(max_blocks) or max_blocks < 0:
            raise _Unplain
        return cls(strict, auto, max_blocks, _extras(d, cls._KNOWN))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.strict_affinity:
            out["strict_affinity"] = True
        if self.auto_allocate_blocks:
            out["auto_allocate_blocks"] = True
        if self.max_blocks_per_host:
            out["maxBlocksPerHost"] = self.max_blocks_per_host
        _dump_extras(out, self.extras)
        return out
