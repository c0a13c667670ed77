"""``calicoctl ipam`` against allocations made by the real calico-ipam plugin.

The leak is planted the way it happens in production: a CNI ADD is killed
(SIGKILL) once its address is allocated and before the calico plugin wrote
the WorkloadEndpoint, so IPAM holds an address nothing uses.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from datastore.keys import ListOptions
from tests.calicoctl.conftest import Calicoctl
from tests.ipam.helpers import allocations, create_wep, wep_name
from tests.support.cni_exec import exec_plugin

pytestmark = pytest.mark.etcd

NODE = "node-ctl"
NETWORK = "k8s-pod-network"
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: ctl-pool
spec:
  cidr: 10.77.0.0/24
  blockSize: 28
"""


def _conf(endpoint: str, tmp: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": NETWORK, "type": "calico", "etcd_endpoints": endpoint,
        "nodename": NODE, "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
        "log_file_path": os.path.join(tmp, "cni.log"), "log_level": "info",
        "ipam": {"type": "calico-ipam"},
    }


def _env(cni_path: str, container_id: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id, "CNI_NETNS": "/var/run/netns/ctl-test", "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=leaky", "CNI_PATH": cni_path,
    }


def kill_add_after_allocation(backend: Any, cni_path: str, conf: dict[str, Any], container_id: str) -> tuple[str, int]:
    """Start a calico-ipam ADD, SIGKILL it as soon as its allocation is in the
    datastore; return the leaked address and the process's exit status
    (-9 when the kill landed before it could exit by itself)."""
    handle = f"{NETWORK}.{container_id}"
    proc = subprocess.Popen([os.path.join(cni_path, "calico-ipam")], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(cni_path, container_id))
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            leaked = [ip for ip, (_, h, _) in allocations(backend).items() if h == handle]
            if leaked:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                return leaked[0], proc.wait()
            assert proc.poll() is None or proc.returncode == 0, f"calico-ipam ADD failed ({proc.returncode})"
            time.sleep(0.01)
        raise AssertionError("the ADD never allocated")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_ipam_show_check_release(calicoctl_etcd: Calicoctl, cni_path: str, tmp_path: Any) -> None:
    calicoctl = calicoctl_etcd
    backend = calicoctl.backend
    calicoctl.ok("apply", "-f", "-", input=POOL)
    conf = _conf(calicoctl.env["ETCD_ENDPOINTS"], str(tmp_path))

    # A healthy pod: IPAM ADD completed and its WorkloadEndpoint written.
    good = exec_plugin(cni_path, "calico-ipam", "ADD", conf, container_id="goodc0ffee",
                       netns="/var/run/netns/ctl-test", cni_args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=good")
    assert good.ok, good.stderr
    good_ip = good.json["ips"][0]["address"].split("/")[0]
    create_wep(backend, NODE, "goodc0ffee", [good.json["ips"][0]["address"]])
    # The leak: an ADD killed between allocation and endpoint.
    leaked_ip, status = kill_add_after_allocation(backend, cni_path, conf, "leakyc0ffee")
    assert leaked_ip != good_ip
    assert status in (-signal.SIGKILL, 0), status  # 0: it finished first (same datastore state)
    print(f"ADD exit status {status} (-9: killed midway)")

    show = calicoctl.ok("ipam", "show", "--show-blocks").stdout.splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in show if line.startswith("|")]
    assert rows[0] == ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]
    assert rows[1] == ["IP Pool", "10.77.0.0/24", "256", "2 (1%)", "254 (99%)"]
    assert len(rows) == 3 and rows[2][0] == "Block" and rows[2][2:] == ["16", "2 (12%)", "14 (88%)"]
    assert show[0] == show[2] == show[-1] and show[0].startswith("+----------+--")
    assert "|       256 |" in show[3]  # totals right-aligned, as upstream

    one = calicoctl.ok("ipam", "show", "--ip", good_ip).stdout
    assert one.startswith(f"IP {good_ip} is in use\nHandle ID: {NETWORK}.goodc0ffee\nActive Owner Attributes:\n")
    assert "  namespace: default\n" in one and f"  node: {NODE}\n" in one and "  pod: good\n" in one
    assert calicoctl.ok("ipam", "show", "--ip", "10.77.0.250").stdout == "10.77.0.250 is not assigned\n"

    # ipam check finds the leak (and only it), exits 1, writes upstream's report.
    report_path = str(tmp_path / "report.json")
    check = calicoctl.fails("ipam", "check", "--show-problem-ips", "-o", report_path)
    assert "Found 1 IPs that are allocated in IPAM but not actually in use.\n" in check.stdout
    assert f"  {leaked_ip} leaked; attrs Main:{NETWORK}.leakyc0ffee Extra:" in check.stdout
    assert "Found 1 workload IPs.\n" in check.stdout
    assert check.stdout.endswith("Check complete; found 1 problems.\n")
    assert check.stderr == "IPAM check found 1 problems\n"
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    assert report["allocations"][good_ip][0]["inUse"] is True
    assert report["allocations"][good_ip][0]["owners"] == [f"Workload(default/{wep_name(NODE, 'goodc0ffee')})"]
    leak = report["allocations"][leaked_ip][0]
    assert leak["inUse"] is False and leak["handle"] == f"{NETWORK}.leakyc0ffee" and leak["node"] == NODE
    assert isinstance(leak["sequenceNumber"], int)

    # Releasing from the report needs a locked datastore (or --force) and a current report.
    refused = calicoctl.fails("ipam", "release", "--from-report", report_path)
    assert refused.stderr == "data store is not locked. Either lock the data store, or re-run with --force\n"
    assert calicoctl.ok("datastore", "migrate", "lock").stdout == "Datastore locked.\n"
    stale = calicoctl.fails("ipam", "release", "--from-report", report_path)
    assert stale.stderr.startswith("the provided reports are all stale")
    calicoctl.fails("ipam", "check", "-o", report_path)
    released = calicoctl.ok("ipam", "release", "--from-report", report_path)
    assert released.stdout == ("Releasing 1 old IPs...\nReleased 1 IPs successfully\n"
                               "Report didn't contain any handles to clean up.\nYou may now unlock the data store.\n")
    calicoctl.ok("datastore", "migrate", "unlock")
    assert leaked_ip not in allocations(backend)
    clean = calicoctl.ok("ipam", "check")
    assert clean.stdout.endswith("Check complete; found 0 problems.\n")

    # Single-address release.
    assert calicoctl.ok("ipam", "release", "--ip", good_ip).stdout == f"Successfully released IP address {good_ip}\n"
    assert calicoctl.fails("ipam", "release", "--ip", good_ip).stderr == f"IP address {good_ip} is not assigned\n"
    assert calicoctl.fails("ipam", "release", "--ip", "10.77.0.999").stderr == \
        "Invalid IP address specified: 10.77.0.999\n"
    # The endpoint still uses the address: that is a problem now.
    after = calicoctl.fails("ipam", "check")
    assert "Found 1 in-use IPs that are in active IP pools but have no corresponding IPAM allocation.\n" in after.stdout
    assert not [kv for kv in backend.list(ListOptions(kind="IPAMHandle")).items]


def test_ipam_configure(calicoctl: Calicoctl) -> None:
    assert calicoctl.ok("ipam", "configure", "--strictaffinity=true").stdout == \
        "Successfully set StrictAffinity to: true\n"
    assert calicoctl.ok("ipam", "configure", "--max-blocks-per-host", "5").stdout == \
        "Successfully set MaxBlocksPerHost to: 5\n"
    conf = calicoctl.ok("ipam", "show", "--show-configuration").stdout
    assert "| StrictAffinity     | true  |" in conf and "| MaxBlocksPerHost   | 5     |" in conf
    refused = calicoctl.fails("ipam", "configure", "--strictaffinity=false")
    assert refused.stderr == "error: maxBlocksPerHost requires strictAffinity to be enabled\n"
    assert calicoctl.fails("ipam", "configure", "--strictaffinity=maybe").stderr.startswith(
        "Invalid value for --strictaffinity: 'maybe'")
    from ipam.config import load_settings

    settings = load_settings(calicoctl.backend)
    assert settings.strict_affinity and settings.max_blocks_per_host == 5
