"""calico chained with the reference portmap plugin, driven by cnitool (libcni)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.cni_exec import CACHE
from tests.support.netns import Netns, cali_links

pytestmark = [pytest.mark.etcd, pytest.mark.netns]
CNITOOL = os.path.join(CACHE, "bin", "cnitool")


def test_conflist_with_portmap_via_cnitool(netconf, cni_path, tmp_path, datastore, node) -> None:  # type: ignore[no-untyped-def]
    plugin = {k: v for k, v in netconf.items() if k not in ("cniVersion", "name")}
    conflist = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [plugin, {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}],
    }
    confdir = tmp_path / "net.d"
    confdir.mkdir()
    (confdir / "10-calico.conflist").write_text(json.dumps(conflist))
    env = {**os.environ, "NETCONFPATH": str(confdir), "CNI_PATH": cni_path,
           "CNI_CACHE_DIR": str(tmp_path / "cache"),
           "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=chained",
           "CAP_ARGS": json.dumps({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]})}
    datastore.prepare_pod("default", "chained", node)
    with Netns() as ns:
        add = subprocess.run([CNITOOL, "add", "k8s-pod-network", ns.path], env=env, capture_output=True, text=True)
        assert add.returncode == 0, add.stdout + add.stderr
        result = json.loads(add.stdout)
        assert result["ips"][0]["address"].endswith("/32")
        # portmap received our result as prevResult and programmed the mapping.
        nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        ipt = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
        assert "18080" in nft or "18080" in ipt
        check = subprocess.run([CNITOOL, "check", "k8s-pod-network", ns.path], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        delete = subprocess.run([CNITOOL, "del", "k8s-pod-network", ns.path], env=env, capture_output=True, text=True)
        assert delete.returncode == 0, delete.stdout + delete.stderr
    assert result["interfaces"][0]["name"] not in cali_links()
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    ipt = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert "18080" not in nft and "18080" not in ipt
