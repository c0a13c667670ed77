"""Small pools: exhaustion changes nothing; borrowing across hosts with and
without strictAffinity; clear errors for missing pools."""
from __future__ import annotations

import ipaddress

import pytest

from ipam.config import IPAMSettings, save_settings
from tests.ipam.conftest import IPAMEnv
from tests.ipam.helpers import allocations, block_affinities, handles, ipam_snapshot
from tests.support.pools import create_pool

pytestmark = pytest.mark.etcd


def _ip(result) -> str:  # type: ignore[no-untyped-def]
    assert result.ok, result.stdout + result.stderr[-1500:]
    return str(ipaddress.ip_interface(result.json["ips"][0]["address"]).ip)


def test_exhaust_small_pool_borrowing_and_strict_affinity(ipam_env: IPAMEnv) -> None:
    backend = ipam_env.backend
    # One block of 4 addresses.
    create_pool(backend, "tiny", "10.43.0.0/30", blockSize=30)
    save_settings(backend, IPAMSettings(strict_affinity=True))
    conf_a, conf_b = ipam_env.conf(node="node-a"), ipam_env.conf(node="node-b")

    first = _ip(ipam_env.add("a1", conf_a))
    assert block_affinities(backend) == {"10.43.0.0/30": "host:node-a"}

    # strictAffinity: node-b cannot claim (no free block) and may not borrow.
    before = ipam_snapshot(backend)
    refused = ipam_env.add("b1", conf_b)
    assert refused.returncode != 0 and refused.json["code"] == 102, refused.stdout
    assert "strictAffinity" in refused.json["msg"] and "tiny (10.43.0.0/30)" in refused.json["msg"]
    assert ipam_snapshot(backend) == before, "a refused ADD changed the datastore"
    status = ipam_env.run("STATUS", ipam_env.conf(node="node-b", cni_version="1.1.0"))
    assert status.returncode != 0 and status.json["code"] == 50

    # Without strictAffinity node-b borrows from node-a's block.
    save_settings(backend, IPAMSettings(strict_affinity=False))
    borrowed = _ip(ipam_env.add("b1", conf_b))
    assert borrowed != first
    allocs = allocations(backend)
    assert allocs[borrowed][0] == "10.43.0.0/30" and allocs[borrowed][2]["node"] == "node-b"
    assert block_affinities(backend) == {"10.43.0.0/30": "host:node-a"}  # still node-a's block

    # Fill the pool, then the next ADD fails with 102 and changes nothing.
    third, fourth = _ip(ipam_env.add("a2", conf_a)), _ip(ipam_env.add("b2", conf_b))
    assert len({first, borrowed, third, fourth}) == 4
    before = ipam_snapshot(backend)
    full = ipam_env.add("a3", conf_a)
    assert full.returncode != 0 and full.json["code"] == 102, full.stdout
    assert "tiny (10.43.0.0/30)" in full.json["msg"]
    assert ipam_snapshot(backend) == before, "a failed ADD changed the datastore"
    assert "k8s-pod-network.a3" not in handles(backend)

    # A release makes room again; the borrowed address goes back to the block.
    assert ipam_env.delete("b1", conf_b).ok
    assert _ip(ipam_env.add("a3", conf_a)) == borrowed


def test_missing_or_unusable_pools_are_named(ipam_env: IPAMEnv) -> None:
    backend = ipam_env.backend
    none = ipam_env.add("x1")
    assert none.json["code"] == 102 and "no IPv4 IP pool is configured" in none.json["msg"]

    create_pool(backend, "off", "10.44.0.0/24", disabled=True)
    create_pool(backend, "elsewhere", "10.45.0.0/24", nodeSelector="rack == 'r9'")
    missing = ipam_env.add("x2", ipam_env.conf(ipv4_pools=["no-such-pool"]))
    assert missing.json["code"] == 102 and "'no-such-pool' does not exist" in missing.json["msg"]
    disabled = ipam_env.add("x3", ipam_env.conf(ipv4_pools=["10.44.0.0/24"]))
    assert disabled.json["code"] == 102 and "off (10.44.0.0/24) is disabled" in disabled.json["msg"]
    unselected = ipam_env.add("x4")
    assert unselected.json["code"] == 102 and "selects node 'node-1'" in unselected.json["msg"]
    assert ipam_snapshot(backend) == {}
