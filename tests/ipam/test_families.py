"""IPv6-only and dual-stack pods."""
from __future__ import annotations

import ipaddress

import pytest

from tests.ipam.conftest import IPAMEnv
from tests.ipam.helpers import allocations, handles, ipam_snapshot
from tests.support.pools import create_pool

pytestmark = pytest.mark.etcd


def test_ipv6_only(ipam_env: IPAMEnv) -> None:
    create_pool(ipam_env.backend, "v6", "fd00:46::/112")
    create_pool(ipam_env.backend, "v4", "10.46.0.0/24")
    conf = ipam_env.conf(cni_version="0.3.1", assign_ipv4="false", assign_ipv6="true")
    result = ipam_env.add("v6a", conf)
    assert result.ok, result.stdout + result.stderr[-1500:]
    ips = result.json["ips"]
    assert len(ips) == 1 and ips[0]["version"] == "6"  # 0.3.1 result shape
    iface = ipaddress.ip_interface(ips[0]["address"])
    assert iface.version == 6 and iface.network.prefixlen == 122
    assert iface.ip in ipaddress.ip_network("fd00:46::/112")
    assert handles(ipam_env.backend) == {"k8s-pod-network.v6a": {str(iface.network): 1}}
    assert ipam_env.delete("v6a", conf).ok
    assert allocations(ipam_env.backend) == {} and handles(ipam_env.backend) == {}


def test_dual_stack_and_half_success_rolls_back(ipam_env: IPAMEnv) -> None:
    create_pool(ipam_env.backend, "v4", "10.47.0.0/24")
    create_pool(ipam_env.backend, "v6-small", "fd00:47::/126", blockSize=126)  # 4 addresses
    conf = ipam_env.conf(assign_ipv6="true", routes=[{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
    got = []
    for i in range(4):
        result = ipam_env.add(f"ds{i}", conf)
        assert result.ok, result.stdout + result.stderr[-1500:]
        ips = [ipaddress.ip_interface(ip["address"]) for ip in result.json["ips"]]
        assert [ip.version for ip in ips] == [4, 6]
        assert ips[0].network.prefixlen == 26 and ips[1].network.prefixlen == 126
        assert result.json["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        got += [str(ip.ip) for ip in ips]
        assert set(handles(ipam_env.backend)[f"k8s-pod-network.ds{i}"]) == {str(ips[0].network), str(ips[1].network)}
    assert len(set(got)) == 8

    # IPv6 exhausted: IPv4 is assigned, then released, and the ADD fails.
    v4_before = {ip for ip in allocations(ipam_env.backend) if ":" not in ip}
    half = ipam_env.add("ds-half", conf)
    assert half.returncode != 0 and half.json["code"] == 102 and "IPv6" in half.json["msg"], half.stdout
    assert {ip for ip in allocations(ipam_env.backend) if ":" not in ip} == v4_before
    assert "k8s-pod-network.ds-half" not in handles(ipam_env.backend)

    for i in range(4):
        assert ipam_env.delete(f"ds{i}", conf).ok
    assert allocations(ipam_env.backend) == {}
    assert all(not key.startswith("/calico/ipam/v2/handle/") for key in ipam_snapshot(ipam_env.backend))
