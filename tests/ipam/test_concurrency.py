"""Concurrent ADD/DEL through the real calico-ipam executable on a real etcd."""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ipam.checker import check
from tests.ipam.conftest import IPAMEnv, parallel
from tests.ipam.helpers import allocations, block_affinities, create_wep, delete_wep, handles
from tests.support.pools import create_pool

pytestmark = pytest.mark.etcd


def _address(result: Any) -> str:
    assert result.ok, result.stdout + result.stderr[-2000:]
    ips = result.json["ips"]
    assert len(ips) == 1
    return ips[0]["address"]


def test_50_concurrent_adds_on_one_node_then_50_dels(ipam_env: IPAMEnv) -> None:
    create_pool(ipam_env.backend, "pool-a", "10.40.0.0/16")
    ids = [f"c50-{i:02d}" for i in range(50)]
    results = parallel(ipam_env.add, ids)
    addresses = [_address(r) for r in results]
    ips = [str(ipaddress.ip_interface(a).ip) for a in addresses]
    assert len(set(ips)) == 50
    assert all(ipaddress.ip_interface(a).network.prefixlen == 26 for a in addresses)

    allocs = allocations(ipam_env.backend)
    assert sorted(allocs) == sorted(ips)
    affinity = block_affinities(ipam_env.backend)
    for cid, ip in zip(ids, ips):
        cidr, handle, attrs = allocs[ip]
        assert handle == f"k8s-pod-network.{cid}"
        assert attrs["node"] == "node-1" and attrs["interface"] == "eth0"
        assert affinity[cidr] == "host:node-1"
    # 50 addresses in /26 blocks: exactly the blocks needed, all this host's.
    assert len(affinity) == 1 or len(affinity) == 2

    for cid, address in zip(ids, addresses):
        create_wep(ipam_env.backend, "node-1", cid, [address])
    report = check(ipam_env.backend)
    assert report.ok, report.details()
    assert report.allocation_count == 50 and report.handles == 50

    dels = parallel(ipam_env.delete, ids)
    assert all(r.ok and r.stdout == "" for r in dels), [r.stderr[-500:] for r in dels if not r.ok]
    for cid in ids:
        delete_wep(ipam_env.backend, "node-1", cid)
    assert allocations(ipam_env.backend) == {}
    assert handles(ipam_env.backend) == {}
    report = check(ipam_env.backend)
    assert report.ok, report.details()


def test_4_nodes_x_25_concurrent_adds(ipam_env: IPAMEnv) -> None:
    create_pool(ipam_env.backend, "pool-b", "10.41.0.0/16")
    jobs = [(f"node-{n}", f"n{n}-c{i:02d}") for n in range(4) for i in range(25)]

    def add(job: tuple[str, str]) -> Any:
        node, cid = job
        return ipam_env.add(cid, ipam_env.conf(node=node))

    results = parallel(add, jobs, workers=100)
    ips = [str(ipaddress.ip_interface(_address(r)).ip) for r in results]
    assert len(set(ips)) == 100, "an address was handed out twice"

    allocs = allocations(ipam_env.backend)
    affinity = block_affinities(ipam_env.backend)
    assert sorted(allocs) == sorted(ips)
    for (node, cid), ip in zip(jobs, ips):
        cidr, handle, attrs = allocs[ip]
        assert attrs["node"] == node and handle == f"k8s-pod-network.{cid}"
        # 25 per node fit in one /26 of its own: nobody had to borrow.
        assert affinity[cidr] == f"host:{node}", (ip, cidr, affinity[cidr], node)
    owners = [a for a in affinity.values()]
    assert sorted(owners) == sorted(f"host:node-{n}" for n in range(4))

    report = check(ipam_env.backend)
    assert not report.duplicate_ips and not report.corrupt_blocks
    assert not report.refcount_mismatches and not report.leaked_handles and not report.missing_handles
    assert not report.stale_affinities
    assert len(report.leaked_ips) == 100  # no workload endpoints were written in this test
