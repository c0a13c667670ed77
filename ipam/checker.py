"""IPAM consistency checker (the library behind ``calicoctl ipam check``).

Reads every block, handle, affinity, pool, workload endpoint and node and
reports, without changing anything:

* allocations no workload endpoint or node uses (leaked IPs);
* addresses in use by a workload or node that IPAM has not allocated;
* handles that no allocation refers to (leaked handles), allocations whose
  handle object is missing, and handles whose per-block counts differ from
  what the blocks hold;
* blocks that are malformed, blocks that no longer overlap any IP pool, the
  same address allocated twice, and affinities out of step with their block.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from datastore.backend import Backend
from datastore.keys import ListOptions

from ipam import blocks as blk
from ipam.pools import Pool, load_pools
from ipam.store import Store

@dataclass
class Allocation:
    ip: str
    block: str
    handle_id: str | None
    attrs: dict[str, str] = field(default_factory=dict)
    in_use_by: list[str] = field(default_factory=list)

    @property
    def node(self) -> str | None:
        return self.attrs.get("node")


@dataclass
class LeakedHandle:
    handle_id: str
    blocks: dict[str, int]
    revision: str


@dataclass
class RefcountMismatch:
    handle_id: str
    block: str
    handle_count: int
    block_count: int


@dataclass
class StaleAffinity:
    node: str
    block: str
    state: str
    reason: str


@dataclass
class CheckReport:
    blocks: int = 0
    handles: int = 0
    allocations: dict[str, list[Allocation]] = field(default_factory=dict)
    in_use: dict[str, list[str]] = field(default_factory=dict)
    leaked_ips: list[Allocation] = field(default_factory=list)
    in_use_not_allocated: dict[str, list[str]] = field(default_factory=dict)
    in_use_outside_pools: dict[str, list[str]] = field(default_factory=dict)
    duplicate_ips: dict[str, list[str]] = field(default_factory=dict)  # ip -> blocks
    leaked_handles: list[LeakedHandle] = field(default_factory=list)
    missing_handles: list[str] = field(default_factory=list)
    refcount_mismatches: list[RefcountMismatch] = field(default_factory=list)
    corrupt_blocks: dict[str, list[str]] = field(default_factory=dict)
    orphan_blocks: list[str] = field(default_factory=list)
    stale_affinities: list[StaleAffinity] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.leaked_ips)
            + len(self.in_use_not_allocated)
            + len(self.in_use_outside_pools)
            + len(self.duplicate_ips)
            + len(self.leaked_handles)
            + len(self.missing_handles)
            + len(self.refcount_mismatches)
            + len(self.corrupt_blocks)
            + len(self.orphan_blocks)
            + len(self.stale_affinities)
        )

    @property
    def ok(self) -> bool:
        return self.problems == 0

    @property
    def allocation_count(self) -> int:
        return sum(len(a) for a in self.allocations.values())

    def suspect_handles(self) -> set[str]:
        """Handles a leak release would free: those of leaked IPs, leaked
        handles, and handles whose counts are out of step."""
        out = {a.handle_id for a in self.leaked_ips if a.handle_id}
        out |= {h.handle_id for h in self.leaked_handles}
        out |= {m.handle_id for m in self.refcount_mismatches}
        return out

    def summary(self) -> str:
        lines = [
            f"Found {self.blocks} IPAM blocks with {self.allocation_count} allocations, {self.handles} handles.",
            f"Found {len(self.leaked_ips)} IPs that are allocated in IPAM but not actually in use.",
            f"Found {len(self.in_use_outside_pools)} in-use IPs that are not in active IP pools.",
            f"Found {len(self.in_use_not_allocated)} in-use IPs that are in active IP pools but have no "
            "corresponding IPAM allocation.",
            f"Found {len(self.duplicate_ips)} IPs allocated more than once.",
            f"Found {len(self.leaked_handles)} handles with no matching IPs.",
            f"Found {len(self.missing_handles)} handles mentioned in blocks with no matching handle resource.",
            f"Found {len(self.refcount_mismatches)} handle counts out of step with their blocks.",
            f"Found {len(self.corrupt_blocks)} malformed blocks and {len(self.orphan_blocks)} blocks "
            "outside every IP pool.",
            f"Found {len(self.stale_affinities)} block affinities out of step with their blocks.",
            f"Check complete; found {self.problems} problems.",
        ]
        return "\n".join(lines)

    def details(self) -> list[str]:
        out = []
        for a in self.leaked_ips:
            out.append(f"{a.ip} leaked (block {a.block}, handle {a.handle_id}, attrs {a.attrs})")
        for ip, owners in self.in_use_not_allocated.items():
            out.append(f"{ip} in use by {', '.join(owners)} but not allocated")
        for ip, owners in self.in_use_outside_pools.items():
            out.append(f"{ip} in use by {', '.join(owners)} is not in any active IP pool")
        for ip, cidrs in self.duplicate_ips.items():
            out.append(f"{ip} allocated {len(cidrs)} times (blocks {', '.join(cidrs)})")
        for h in self.leaked_handles:
            out.append(f"handle {h.handle_id} has no allocations (counts {h.blocks})")
        for handle in self.missing_handles:
            out.append(f"handle {handle} is used in blocks but does not exist")
        for m in self.refcount_mismatches:
            out.append(f"handle {m.handle_id} counts {m.handle_count} in {m.block}, the block holds {m.block_count}")
        for cidr, problems in self.corrupt_blocks.items():
            out.append(f"block {cidr} is malformed: {'; '.join(problems)}")
        for cidr in self.orphan_blocks:
            out.append(f"block {cidr} is in no IP pool")
        for s in self.stale_affinities:
            out.append(f"affinity of {s.node} for {s.block} ({s.state}): {s.reason}")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = self.problems
        return out


def _normalise_ip(value: str) -> str:
    return str(ipaddress.ip_interface(value).ip)


def _node_ips(node: dict[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    bgp = spec.get("bgp") or {}
    wg = spec.get("wireguard") or {}
    candidates = [
        bgp.get("ipv4IPIPTunnelAddr"),
        spec.get("ipv4VXLANTunnelAddr"),
        spec.get("ipv6VXLANTunnelAddr"),
        wg.get("interfaceIPv4Address"),
        wg.get("interfaceIPv6Address"),
    ]
    return [_normalise_ip(c) for c in candidates if c]


def check(backend: Backend, extra_in_use: dict[str, list[str]] | None = None) -> CheckReport:
    """Check the whole IPAM state. ``extra_in_use`` adds owners for IPs the
    datastore does not know about (e.g. Kubernetes load-balancer IPs)."""
    from pydantic import ValidationError

    from datastore.models.ipam import AllocationBlock

    store = Store(backend)
    report = CheckReport()
    pools = load_pools(backend)
    active = [p for p in pools if not p.disabled]

    # In-use addresses: workload endpoints and node tunnel addresses.
    in_use: dict[str, list[str]] = {ip: list(owners) for ip, owners in (extra_in_use or {}).items()}
    for kv in backend.list(ListOptions(kind="WorkloadEndpoint")).items:
        meta = kv.value.get("metadata") or {}
        owner = f"Workload({meta.get('namespace')}/{meta.get('name')})"
        for net in (kv.value.get("spec") or {}).get("ipNetworks") or []:
            in_use.setdefault(_normalise_ip(net), []).append(owner)
    for kv in backend.list(ListOptions(kind="Node")).items:
        name = (kv.value.get("metadata") or {}).get("name")
        for ip in _node_ips(kv.value):
            in_use.setdefault(ip, []).append(f"Node({name})")
    report.in_use = in_use

    # Blocks and their allocations.
    block_counts: dict[str, dict[str, int]] = {}  # handle -> block -> count
    parsed: dict[str, AllocationBlock] = {}
    raw_blocks = store.list_block_dicts()
    report.blocks = len(raw_blocks)
    for cidr, value, _ in raw_blocks:
        try:
            block = AllocationBlock.from_dict(value)
        except ValidationError as exc:
            report.corrupt_blocks[cidr] = [e["msg"] for e in exc.errors()]
            continue
        problems = blk.check_block(block)
        if block.cidr != cidr:
            problems.append(f"stored under {cidr} but says {block.cidr}")
        if problems:
            report.corrupt_blocks[cidr] = problems
        parsed[cidr] = block
        if not pools_overlapping(pools, cidr):
            report.orphan_blocks.append(cidr)
        for ordinal, index in enumerate(block.allocations):
            if index is None:
                continue
            attr = blk.attribute_of(block, ordinal)
            handle = attr.handle_id if attr else None
            ip = str(blk.ip_of(block, ordinal))
            alloc = Allocation(ip, cidr, handle, dict((attr.secondary if attr else None) or {}))
            report.allocations.setdefault(ip, []).append(alloc)
            if handle:
                per_block = block_counts.setdefault(handle, {})
                per_block[cidr] = per_block.get(cidr, 0) + 1

    for ip, allocs in report.allocations.items():
        if len(allocs) > 1:
            report.duplicate_ips[ip] = [a.block for a in allocs]
        owners = in_use.get(ip)
        for alloc in allocs:
            if owners:
                alloc.in_use_by = list(owners)
            else:
                report.leaked_ips.append(alloc)

    for ip, owners in in_use.items():
        if ip in report.allocations:
            continue
        if any(ipaddress.ip_address(ip) in p.network for p in active):
            report.in_use_not_allocated[ip] = owners
        else:
            report.in_use_outside_pools[ip] = owners

    # Handles.
    handles = store.list_handles()
    report.handles = len(handles)
    known = set()
    for h in handles:
        assert h.value.handle_id is not None
        hid = h.value.handle_id
        known.add(hid)
        actual = block_counts.get(hid, {})
        if not actual:
            report.leaked_handles.append(LeakedHandle(hid, dict(h.value.block), h.revision))
            continue
        for cidr in sorted(set(actual) | set(h.value.block)):
            if cidr in report.corrupt_blocks and cidr not in parsed:
                continue
            if h.value.block.get(cidr, 0) != actual.get(cidr, 0):
                report.refcount_mismatches.append(
                    RefcountMismatch(hid, cidr, h.value.block.get(cidr, 0), actual.get(cidr, 0))
                )
    report.missing_handles = sorted(set(block_counts) - known)

    # Affinities.
    affine_records = set()
    for key, aff in store.list_affinities():
        affine_records.add((key.host, key.cidr))
        block = parsed.get(key.cidr)
        state = aff.value.state
        if state != "confirmed":
            reason = "claim or release interrupted"
        elif key.cidr not in parsed and key.cidr not in report.corrupt_blocks:
            reason = "the block does not exist"
        elif block is not None and not blk.is_affine_to(block, key.host):
            reason = f"the block is affine to {block.affinity or 'no host'}"
        else:
            continue
        report.stale_affinities.append(StaleAffinity(key.host, key.cidr, state, reason))
    for cidr, block in parsed.items():
        host = block.host
        if block.affinity and block.affinity.startswith(blk.HOST_AFFINITY_PREFIX) and (host, cidr) not in affine_records:
            report.stale_affinities.append(
                StaleAffinity(host, cidr, "-", "the block is affine to the host but the host has no affinity")
            )
    return report


def pools_overlapping(pools: list[Pool], cidr: str) -> list[Pool]:
    net = ipaddress.ip_network(cidr)
    return [p for p in pools if p.version == net.version and p.network.overlaps(net)]  # type: ignore[arg-type]
