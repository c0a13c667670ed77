"""``calicoctl ipam split`` against a real datastore (etcd and kube-apiserver):
refused unless the datastore is locked, upstream's errors (writing nothing),
then a pool with live allocations split into equal children that keep its
settings and its blocks' allocations."""
from __future__ import annotations

import ipaddress

import pytest

from datastore.keys import ListOptions
from ipam.allocator import Allocator
from tests.calicoctl.conftest import Calicoctl

pytestmark = pytest.mark.etcd

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: big
  labels:
    team: net
spec:
  cidr: 10.80.0.0/22
  blockSize: 26
  natOutgoing: true
  vxlanMode: Always
"""


def _pools(ctl: Calicoctl) -> dict[str, dict]:
    return {kv.key.name: kv.value for kv in ctl.backend.list(ListOptions(kind="IPPool")).items}


def _show_rows(ctl: Calicoctl) -> list[list[str]]:
    show = ctl.ok("ipam", "show", "--show-blocks").stdout.splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in show if line.startswith("|")][1:]


def test_ipam_split(calicoctl: Calicoctl) -> None:
    ctl = calicoctl
    ctl.ok("apply", "-f", "-", input=POOL)
    got = Allocator(ctl.backend, "node-split").auto_assign(4, "k8s-pod-network.split1", {"node": "node-split"}, num=3)
    ips = [str(a.ip) for a in got]
    assert len(ips) == 3 and all(ip.startswith("10.80.") for ip in ips)
    before = _pools(ctl)

    refused = ctl.fails("ipam", "split", "--name", "big", "4")
    assert refused.stderr == ("datastore is not locked. Run the `calicoctl datastore migrate lock` command in "
                              "order split the IP pools\n")
    ctl.ok("datastore", "migrate", "lock")
    errors = [
        (["4"], "no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split"),
        (["--name", "big", "x"], 'error reading number to split IP pools into. x is not a valid number: '
                                 'strconv.Atoi: parsing "x": invalid syntax'),
        (["--name", "big", "3"], "error splitting the CIDR 10.80.0.0/22 into 3 CIDRs: number to split CIDR "
                                 "into is not a valid power of 2: 3"),
        (["--name", "big", "1"], "error splitting the CIDR 10.80.0.0/22 into 1 CIDRs: number to split CIDR "
                                 "into is not a valid power of 2: 1"),
        (["--name", "nope", "2"], "unable to find IP pool with name nope: resource does not exist: "
                                  "IPPool(nope) with error: <nil>"),
        (["--cidr", "10.81.0.0/22", "2"], "unable to find IP pool  covering the specified CIDR 10.81.0.0/22"),
        # /27 children would be smaller than the pool's /26 blocks.
        (["--cidr", "10.80.0.0/22", "32"], "error using unsafe create to make split pool with cidr 10.80.0.0/27: "
                                           "invalid IPPool 'split-big-0': spec.blockSize:"),
    ]
    failures = []
    for args, message in errors:
        result = ctl("ipam", "split", *args)
        if result.returncode != 1 or not result.stderr.startswith(message) or result.stdout:
            failures.append(f"{args}: {result}")
    assert not failures, "\n".join(failures)
    assert _pools(ctl) == before  # nothing written by a refused split

    out = ctl.ok("ipam", "split", "--cidr=10.80.0.0/22", "4")
    assert out.stdout == (
        "IP Pool big was successfully split into 4 smaller pools.\n"
        "Created split-big-0 with CIDR 10.80.0.0/24.\n"
        "Created split-big-1 with CIDR 10.80.1.0/24.\n"
        "Created split-big-2 with CIDR 10.80.2.0/24.\n"
        "Created split-big-3 with CIDR 10.80.3.0/24.\n"
        "Please refer to the documentation for final steps.\n")
    pools = _pools(ctl)
    assert sorted(pools) == ["split-big-0", "split-big-1", "split-big-2", "split-big-3"]
    for i, (name, pool) in enumerate(sorted(pools.items())):
        spec = pool["spec"]
        assert spec["cidr"] == f"10.80.{i}.0/24" and spec["blockSize"] == 26, pool
        assert spec["natOutgoing"] is True and spec["vxlanMode"] == "Always" and not spec.get("disabled")
        assert pool["metadata"]["labels"] == {"team": "net"}

    # The allocations are untouched and now belong to the child holding their block.
    for ip in ips:
        assert ctl.ok("ipam", "show", "--ip", ip).stdout.startswith(f"IP {ip} is in use\n")
    block = str(ipaddress.ip_network(f"{ips[0]}/26", strict=False))
    child = str(ipaddress.ip_network(f"{ips[0]}/24", strict=False))
    rows = _show_rows(ctl)
    assert [r[0] for r in rows].count("IP Pool") == 4, rows
    assert ["IP Pool", child, "256", "3 (1%)", "253 (99%)"] in rows, rows
    assert ["Block", block, "64", "3 (5%)", "61 (95%)"] in rows, rows
    assert rows.index(["Block", block, "64", "3 (5%)", "61 (95%)"]) == \
        rows.index(["IP Pool", child, "256", "3 (1%)", "253 (99%)"]) + 1

    # A child splits again (into /25s: still no smaller than a block).
    again = ctl.ok("ipam", "split", "--name", "split-big-3", "2")
    assert "Created split-split-big-3-1 with CIDR 10.80.3.128/25.\n" in again.stdout
    ctl.ok("datastore", "migrate", "unlock")
    assert ctl.fails("ipam", "split", "--name", "split-big-2", "2").stderr.startswith("datastore is not locked")
