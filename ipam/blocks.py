"""Pure allocation-block logic (upstream libcalico-go ``ipam_block.go``).

Everything here works on an :class:`~ipam.values.AllocationBlock` (or the
pydantic :class:`~datastore.models.ipam.AllocationBlock`, same fields) in memory and never touches the datastore, so it is unit-testable. The
allocator reads a block, calls these functions, and writes it back with a
compare-and-swap on the revision it read.

Block layout (upstream's JSON): ``allocations[ordinal]`` is ``None`` (free)
or an index into ``attributes``; ``unallocated`` is the FIFO of free
ordinals (allocate from the head, freed ordinals go to the tail, so the
longest-free address is reused first); ``sequenceNumber`` is bumped on
every write and ``sequenceNumberForAllocation[str(ordinal)]`` remembers the
sequence number an address was allocated at (a release carrying a stale
sequence number is refused).
"""
from __future__ import annotations

import ipaddress
import random
from typing import Iterable, Iterator, Union

from ipam.values import AllocationAttribute, AllocationBlock

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

HOST_AFFINITY_PREFIX = "host:"


class AddressInUseError(Exception):
    """The requested ordinal is already allocated."""


class AffinityError(Exception):
    """strictAffinity: the block does not belong to this host."""


def host_affinity(node: str) -> str:
    return f"{HOST_AFFINITY_PREFIX}{node}"


def new_block(cidr: str, node: str | None, claim_time: str | None = None) -> AllocationBlock:
    return AllocationBlock.new(cidr, affinity=host_affinity(node) if node else None, claim_time=claim_time)


def is_affine_to(block: AllocationBlock, node: str) -> bool:
    return block.affinity == host_affinity(node)


def free_count(block: AllocationBlock) -> int:
    return len(block.unallocated)


def is_empty(block: AllocationBlock) -> bool:
    return all(a is None for a in block.allocations)


def ip_of(block: AllocationBlock, ordinal: int) -> IPAddress:
    return block.network.network_address + ordinal


def ordinal_of(block: AllocationBlock, ip: str | IPAddress) -> int:
    return block.ip_to_ordinal(str(ip))


# -- attributes -------------------------------------------------------------


def _find_or_add_attribute(block: AllocationBlock, handle_id: str | None, attrs: dict[str, str]) -> int:
    for index, existing in enumerate(block.attributes):
        if existing.handle_id == handle_id and (existing.secondary or {}) == attrs:
            return index
    new_attribute = getattr(block, "new_attribute", None)
    if new_attribute is None:  # the pydantic model (calicoctl, tests)
        from datastore.models.ipam import AllocationAttribute as new_attribute
    block.attributes.append(new_attribute(handle_id=handle_id, secondary=dict(attrs) or None))
    return len(block.attributes) - 1


def compact_attributes(block: AllocationBlock) -> None:
    """Drop attribute entries no allocation refers to and renumber the rest."""
    used = sorted({a for a in block.allocations if a is not None})
    if used == list(range(len(block.attributes))):
        return
    renumber = {old: new for new, old in enumerate(used)}
    block.attributes = [block.attributes[old] for old in used]
    block.allocations = [None if a is None else renumber[a] for a in block.allocations]


def attribute_of(block: AllocationBlock, ordinal: int) -> AllocationAttribute | None:
    index = block.allocations[ordinal]
    if index is None or not 0 <= index < len(block.attributes):
        return None
    return block.attributes[index]


def handle_of(block: AllocationBlock, ordinal: int) -> str | None:
    attr = attribute_of(block, ordinal)
    return attr.handle_id if attr is not None else None


# -- allocation -------------------------------------------------------------


def pick_ordinals(block: AllocationBlock, num: int, reserved: Iterable[int] = ()) -> list[int]:
    """The next ``num`` free ordinals from the head of ``unallocated``
    (skipping ``reserved``); fewer if the block has fewer free."""
    skip = set(reserved)
    out: list[int] = []
    for ordinal in block.unallocated:
        if len(out) >= num:
            break
        if ordinal not in skip and block.allocations[ordinal] is None:
            out.append(ordinal)
    return out


def allocate(
    block: AllocationBlock,
    ordinals: list[int],
    handle_id: str | None,
    attrs: dict[str, str],
) -> list[IPAddress]:
    """Mark ``ordinals`` allocated to ``handle_id`` with ``attrs``."""
    if not ordinals:
        return []
    for ordinal in ordinals:
        if not 0 <= ordinal < len(block.allocations):
            raise ValueError(f"ordinal {ordinal} outside block {block.cidr}")
        if block.allocations[ordinal] is not None:
            raise AddressInUseError(f"{ip_of(block, ordinal)} is already allocated in block {block.cidr}")
    index = _find_or_add_attribute(block, handle_id, attrs)
    taken = set(ordinals)
    for ordinal in ordinals:
        block.allocations[ordinal] = index
        block.sequence_number_for_allocation[str(ordinal)] = block.sequence_number
    block.unallocated = [o for o in block.unallocated if o not in taken]
    return [ip_of(block, o) for o in ordinals]


def auto_assign(
    block: AllocationBlock,
    num: int,
    handle_id: str | None,
    attrs: dict[str, str],
    *,
    node: str | None = None,
    affinity_check: bool = False,
    reserved: Iterable[int] = (),
) -> list[IPAddress]:
    """Allocate up to ``num`` addresses; with ``affinity_check`` (strict
    affinity) refuse a block not affine to ``node``."""
    if affinity_check and (node is None or not is_affine_to(block, node)):
        raise AffinityError(f"block {block.cidr} is not affine to host {node}")
    return allocate(block, pick_ordinals(block, num, reserved), handle_id, attrs)


def assign_ip(
    block: AllocationBlock,
    ip: str | IPAddress,
    handle_id: str | None,
    attrs: dict[str, str],
    *,
    node: str | None = None,
    affinity_check: bool = False,
) -> IPAddress:
    if affinity_check and (node is None or not is_affine_to(block, node)):
        raise AffinityError(f"block {block.cidr} is not affine to host {node}")
    return allocate(block, [ordinal_of(block, ip)], handle_id, attrs)[0]


# -- release ----------------------------------------------------------------


def release_ordinals(
    block: AllocationBlock,
    ordinals: Iterable[int],
    sequence_numbers: dict[int, int] | None = None,
) -> dict[str | None, int]:
    """Free ``ordinals``; returns released counts per handle id.

    Ordinals already free are skipped. With ``sequence_numbers`` an ordinal
    whose allocation sequence number differs (it was released and
    re-allocated since) is left alone.
    """
    released: dict[str | None, int] = {}
    for ordinal in ordinals:
        if block.allocations[ordinal] is None:
            continue
        if sequence_numbers is not None and ordinal in sequence_numbers:
            current = block.sequence_number_for_allocation.get(str(ordinal))
            if current is not None and current != sequence_numbers[ordinal]:
                continue
        handle = handle_of(block, ordinal)
        block.allocations[ordinal] = None
        block.sequence_number_for_allocation.pop(str(ordinal), None)
        if ordinal not in block.unallocated:
            block.unallocated.append(ordinal)
        released[handle] = released.get(handle, 0) + 1
    if released:
        compact_attributes(block)
    return released


def ordinals_for_handle(block: AllocationBlock, handle_id: str) -> list[int]:
    indexes = {i for i, a in enumerate(block.attributes) if a.handle_id == handle_id}
    return [o for o, a in enumerate(block.allocations) if a is not None and a in indexes]


def release_handle(block: AllocationBlock, handle_id: str) -> int:
    """Free every address of ``handle_id``; returns how many."""
    return release_ordinals(block, ordinals_for_handle(block, handle_id)).get(handle_id, 0)


def handle_counts(block: AllocationBlock) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for ordinal, index in enumerate(block.allocations):
        if index is not None:
            handle = handle_of(block, ordinal)
            counts[handle] = counts.get(handle, 0) + 1
    return counts


def bump_sequence(block: AllocationBlock) -> None:
    block.sequence_number += 1


# -- consistency ------------------------------------------------------------


def check_block(block: AllocationBlock) -> list[str]:
    """Invariants a well-formed block satisfies; returns the violations."""
    problems: list[str] = []
    size = block.network.num_addresses
    if len(block.allocations) != size:
        problems.append(f"has {len(block.allocations)} allocation entries for {size} addresses")
        return problems
    seen: set[int] = set()
    for ordinal in block.unallocated:
        if not 0 <= ordinal < size:
            problems.append(f"unallocated ordinal {ordinal} is outside the block")
        elif ordinal in seen:
            problems.append(f"ordinal {ordinal} is listed twice as unallocated")
        elif block.allocations[ordinal] is not None:
            problems.append(f"ordinal {ordinal} ({ip_of(block, ordinal)}) is both allocated and unallocated")
        seen.add(ordinal)
    for ordinal, index in enumerate(block.allocations):
        if index is None:
            if ordinal not in seen:
                problems.append(f"ordinal {ordinal} ({ip_of(block, ordinal)}) is neither allocated nor free")
        elif not 0 <= index < len(block.attributes):
            problems.append(f"ordinal {ordinal} refers to missing attribute {index}")
        elif not block.attributes[index].handle_id:
            problems.append(f"ordinal {ordinal} ({ip_of(block, ordinal)}) is allocated without a handle")
    for key in block.sequence_number_for_allocation:
        try:
            ordinal = int(key)
        except ValueError:
            problems.append(f"sequenceNumberForAllocation has a non-ordinal key {key!r}")
            continue
        if not 0 <= ordinal < size:
            problems.append(f"sequenceNumberForAllocation has ordinal {ordinal} outside the block")
    return problems


# -- block CIDRs within a pool ------------------------------------------------


def fnv32(text: str) -> int:
    """FNV-1 32-bit hash (upstream seeds the per-host block order with it)."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= byte
    return h


def block_count(pool: IPNetwork, block_prefix: int) -> int:
    return 1 << (block_prefix - pool.prefixlen)


def block_at(pool: IPNetwork, block_prefix: int, index: int) -> str:
    size = 1 << (pool.max_prefixlen - block_prefix)
    base = int(pool.network_address) + index * size
    return f"{type(pool.network_address)(base)}/{block_prefix}"


def candidate_blocks(pool: IPNetwork, block_prefix: int, node: str) -> Iterator[str]:
    """Every block CIDR of ``pool`` once, from a pseudo-random start that is
    the same for the same host and differs between hosts, wrapping around."""
    count = block_count(pool, block_prefix)
    start = random.Random(fnv32(node)).randrange(count)
    for step in range(count):
        yield block_at(pool, block_prefix, (start + step) % count)


def ip_version(cidr_or_ip: str) -> int:
    return 6 if ":" in cidr_or_ip else 4


def block_cidr_for_ip(ip: str | IPAddress, block_prefix: int) -> str:
    address = ipaddress.ip_address(str(ip))
    return str(ipaddress.ip_network(f"{address}/{block_prefix}", strict=False))
