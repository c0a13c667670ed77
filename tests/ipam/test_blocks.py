"""Unit tests of the pure block logic (no datastore)."""
from __future__ import annotations

import ipaddress

import pytest

from datastore.models.ipam import AllocationBlock
from ipam import blocks as blk


def fresh(cidr: str = "10.0.0.0/29", node: str | None = "n1") -> AllocationBlock:
    return blk.new_block(cidr, node)


def test_new_block_is_all_free_in_order() -> None:
    b = fresh()
    assert b.allocations == [None] * 8
    assert b.unallocated == list(range(8))
    assert b.affinity == "host:n1"
    assert blk.is_empty(b) and blk.check_block(b) == []


def test_auto_assign_pops_the_head_and_records_attributes_and_sequence() -> None:
    b = fresh()
    b.sequence_number = 7
    ips = blk.auto_assign(b, 2, "net.c1", {"node": "n1"}, node="n1", affinity_check=True)
    assert [str(i) for i in ips] == ["10.0.0.0", "10.0.0.1"]
    assert b.allocations[:3] == [0, 0, None]
    assert b.unallocated == [2, 3, 4, 5, 6, 7]
    assert b.attributes[0].handle_id == "net.c1" and b.attributes[0].secondary == {"node": "n1"}
    assert b.sequence_number_for_allocation == {"0": 7, "1": 7}
    assert blk.check_block(b) == []


def test_identical_attributes_are_shared_different_ones_are_not() -> None:
    b = fresh()
    blk.auto_assign(b, 1, "h1", {"node": "n1"})
    blk.auto_assign(b, 1, "h1", {"node": "n1"})
    blk.auto_assign(b, 1, "h2", {"node": "n1"})
    assert b.allocations[:3] == [0, 0, 1]
    assert len(b.attributes) == 2


def test_strict_affinity_refuses_foreign_block() -> None:
    b = fresh(node="other")
    with pytest.raises(blk.AffinityError):
        blk.auto_assign(b, 1, "h", {}, node="n1", affinity_check=True)
    assert blk.auto_assign(b, 1, "h", {}, node="n1", affinity_check=False)


def test_exhaustion_returns_fewer() -> None:
    b = fresh("10.0.0.0/30")
    assert len(blk.auto_assign(b, 3, "h", {})) == 3
    assert len(blk.auto_assign(b, 3, "h", {})) == 1
    assert blk.auto_assign(b, 1, "h", {}) == []
    assert blk.free_count(b) == 0


def test_reserved_ordinals_are_skipped() -> None:
    b = fresh()
    assert blk.pick_ordinals(b, 2, reserved={0, 1}) == [2, 3]


def test_release_appends_to_tail_and_compacts_attributes() -> None:
    b = fresh()
    blk.auto_assign(b, 1, "h1", {"a": "1"})
    blk.auto_assign(b, 1, "h2", {"a": "2"})
    blk.auto_assign(b, 1, "h3", {"a": "3"})
    assert blk.release_handle(b, "h2") == 1
    # ordinal 1 freed: goes to the tail (longest-free reused first)
    assert b.unallocated == [3, 4, 5, 6, 7, 1]
    assert [a.handle_id for a in b.attributes] == ["h1", "h3"]
    assert b.allocations[:3] == [0, None, 1]
    assert "1" not in b.sequence_number_for_allocation
    assert blk.check_block(b) == []


def test_release_is_idempotent() -> None:
    b = fresh()
    blk.auto_assign(b, 2, "h1", {})
    assert blk.release_ordinals(b, [0, 1]) == {"h1": 2}
    assert blk.release_ordinals(b, [0, 1]) == {}
    assert blk.is_empty(b) and blk.check_block(b) == []
    assert sorted(b.unallocated) == list(range(8))


def test_release_with_stale_sequence_number_is_refused() -> None:
    b = fresh()
    b.sequence_number = 10
    blk.auto_assign(b, 1, "h1", {})
    assert blk.release_ordinals(b, [0], {0: 9}) == {}
    assert b.allocations[0] is not None
    assert blk.release_ordinals(b, [0], {0: 10}) == {"h1": 1}


def test_assign_specific_ip_and_in_use() -> None:
    b = fresh()
    ip = blk.assign_ip(b, "10.0.0.5", "h", {})
    assert str(ip) == "10.0.0.5" and 5 not in b.unallocated
    with pytest.raises(blk.AddressInUseError):
        blk.assign_ip(b, "10.0.0.5", "h2", {})
    with pytest.raises(ValueError):
        blk.assign_ip(b, "10.0.1.5", "h2", {})


def test_handle_counts() -> None:
    b = fresh()
    blk.auto_assign(b, 2, "h1", {})
    blk.auto_assign(b, 1, "h2", {})
    assert blk.handle_counts(b) == {"h1": 2, "h2": 1}
    assert blk.ordinals_for_handle(b, "h1") == [0, 1]


def test_check_block_finds_corruption() -> None:
    b = fresh()
    blk.auto_assign(b, 1, "h", {})
    b.unallocated.append(0)  # allocated and free at once
    assert any("both allocated and unallocated" in p for p in blk.check_block(b))
    b = fresh()
    b.unallocated.remove(3)  # lost ordinal
    assert any("neither allocated nor free" in p for p in blk.check_block(b))
    b = fresh()
    b.allocations[2] = 4  # dangling attribute index
    b.unallocated.remove(2)
    assert any("missing attribute" in p for p in blk.check_block(b))


def test_roundtrip_json_keeps_upstream_shape() -> None:
    b = fresh()
    blk.auto_assign(b, 1, "h", {"node": "n1"})
    d = b.to_dict()
    assert set(d) >= {"cidr", "affinity", "allocations", "unallocated", "attributes", "sequenceNumber",
                      "sequenceNumberForAllocation", "deleted"}
    assert d["attributes"][0] == {"handle_id": "h", "secondary": {"node": "n1"}}
    assert AllocationBlock.from_dict(d) == b


def test_candidate_blocks_cover_pool_once_and_differ_by_host() -> None:
    pool = ipaddress.ip_network("10.1.0.0/24")
    a = list(blk.candidate_blocks(pool, 28, "node-a"))
    b = list(blk.candidate_blocks(pool, 28, "node-b"))
    assert sorted(a, key=lambda c: ipaddress.ip_network(c)) == [str(n) for n in pool.subnets(new_prefix=28)]
    assert a == list(blk.candidate_blocks(pool, 28, "node-a"))  # stable per host
    assert a[0] != b[0] or a != b
    v6 = blk.candidate_blocks(ipaddress.ip_network("fd00::/64"), 122, "n")
    assert ipaddress.ip_network(next(v6)).prefixlen == 122


def test_fnv32_matches_reference_values() -> None:
    # FNV-1 32-bit test vectors.
    assert blk.fnv32("") == 0x811C9DC5
    assert blk.fnv32("a") == 0x050C5D7E
    assert blk.fnv32("foobar") == 0x31F0B262


def test_block_cidr_for_ip() -> None:
    assert blk.block_cidr_for_ip("10.0.0.77", 26) == "10.0.0.64/26"
    assert blk.block_cidr_for_ip("fd00::1:5", 122) == "fd00::1:0/122"
