"""cnitool (libcni, built from github.com/containernetworking/cni) against the
frozen plugins and the conflist exactly as the installer put them down."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from datastore.keys import ListOptions
from tests.packaging.conftest import CNITOOL
from tests.support.netns import Netns, cali_links
from tests.support.pools import create_pool

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def allocated(backend) -> list[str]:  # type: ignore[no-untyped-def]
    """(block, ordinal) of every allocated address."""
    found = []
    for kv in backend.list(ListOptions("Block")).items:
        for ordinal, attr in enumerate(kv.value.get("allocations") or []):
            if attr is not None:
                found.append(f"{kv.value['cidr']}#{ordinal}")
    return found


def cnitool(install, tmp_path, *args: str, cap_args: dict | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NETCONFPATH": install.conf_dir, "CNI_PATH": install.bin_dir,
           "CNI_CACHE_DIR": str(tmp_path / "cni-cache"), "CNI_IFNAME": "eth0"}
    if cap_args:
        env["CAP_ARGS"] = json.dumps(cap_args)
    return subprocess.run([CNITOOL, *args], env=env, capture_output=True, text=True, timeout=120)


def test_add_check_del_with_installed_conflist(frozen_install, etcd_backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert os.path.islink(os.path.join(frozen_install.bin_dir, "calico"))  # the frozen bundle, linked
    create_pool(etcd_backend, "pkg-cnitool-pool", "10.125.0.0/16")
    name = frozen_install.conflist["name"]
    ports = {"portMappings": [{"hostPort": 18181, "containerPort": 80, "protocol": "tcp"}]}
    with Netns("pkc") as ns:
        add = cnitool(frozen_install, tmp_path, "add", name, ns.path, cap_args=ports)
        assert add.returncode == 0, add.stdout + add.stderr
        result = json.loads(add.stdout)
        address = result["ips"][0]["address"]
        assert address.startswith("10.125.") and address.endswith("/32")
        assert allocated(etcd_backend)  # calico-ipam took it from the pool in etcd
        assert address.split("/")[0] in ns.run("ip", "-4", "addr", "show", "eth0").stdout
        host_if = result["interfaces"][0]["name"]
        assert host_if.startswith("cali") and host_if in cali_links()
        nat = (subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
               + subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout)
        assert "18181" in nat  # portmap got calico's result as prevResult
        check = cnitool(frozen_install, tmp_path, "check", name, ns.path, cap_args=ports)
        assert check.returncode == 0, check.stdout + check.stderr
        delete = cnitool(frozen_install, tmp_path, "del", name, ns.path, cap_args=ports)
        assert delete.returncode == 0, delete.stdout + delete.stderr
        # A repeated DEL (runtimes retry) is fine.
        again = cnitool(frozen_install, tmp_path, "del", name, ns.path, cap_args=ports)
        assert again.returncode == 0, again.stdout + again.stderr
    assert host_if not in cali_links()
    assert allocated(etcd_backend) == []
    log = open(frozen_install.log_file).read()
    assert "calico ADD" in log and "calico-ipam" in log
