"""calico runs calico-ipam in its own process (same bundle), or execs it when
``PYCALICO_IPAM_EXEC=1``: same results, same errors, same datastore state.

calico-ipam on CNI_PATH here is a wrapper that records each exec, so the
tests see which way it ran."""
from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from tests.cni.test_plugin import allocations, handles, k8s_args
from tests.support.cni_exec import VENV_BIN, exec_plugin, make_cni_path
from tests.support.netns import Netns, cali_links

pytestmark = [pytest.mark.etcd, pytest.mark.netns]

MODES = {"inprocess": {}, "exec": {"PYCALICO_IPAM_EXEC": "1"}}


@pytest.fixture
def wrapped_path(tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A CNI_PATH whose calico-ipam appends a line to a file on every exec."""
    directory = str(tmp_path / "bin")
    os.makedirs(directory)
    marker = str(tmp_path / "ipam-execs")
    source = os.environ.get("PYCALICO_CNI_BIN") or VENV_BIN
    wrapper = os.path.join(directory, "calico-ipam")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> {marker}\nexec {os.path.join(source, 'calico-ipam')} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    return make_cni_path(directory), marker


def _execs(marker: str) -> list[str]:
    return open(marker).read().split() if os.path.exists(marker) else []


@pytest.mark.parametrize("mode", MODES)
def test_add_check_del_either_way(mode, wrapped_path, netconf, datastore, node, backend) -> None:  # type: ignore[no-untyped-def]
    cni_path, marker = wrapped_path
    env: dict[str, str] = dict(MODES[mode])
    cid = f"ipm{uuid.uuid4().hex[:10]}"
    args = k8s_args(f"pod-{cid}")
    datastore.prepare_from_cni_args(args, node)

    def call(command: str, conf: dict[str, Any], netns: str) -> Any:
        return exec_plugin(cni_path, "calico", command, conf, container_id=cid, netns=netns, cni_args=args,
                           extra_env=env)

    with Netns() as ns:
        add = call("ADD", netconf, ns.path)
        assert add.ok, add.stdout + add.stderr
        host_if = add.json["interfaces"][0]["name"]
        assert len(allocations(backend)) == 1 and len(handles(backend)) == 1
        check = call("CHECK", {**netconf, "prevResult": add.json}, ns.path)
        assert check.ok, check.stdout + check.stderr
        delete = call("DEL", netconf, ns.path)
        assert delete.ok, delete.stdout + delete.stderr
    assert host_if not in cali_links()
    assert allocations(backend) == [] and handles(backend) == []
    assert _execs(marker) == (["ADD", "CHECK", "DEL"] if mode == "exec" else [])
    log = open(netconf["log_file_path"]).read()
    assert "calico-ipam" in log  # its own log lines still reach the netconf's log file


@pytest.mark.parametrize("mode", MODES)
def test_ipam_errors_keep_their_codes(mode, wrapped_path, netconf, datastore, node, backend) -> None:  # type: ignore[no-untyped-def]
    cni_path, marker = wrapped_path
    env: dict[str, str] = dict(MODES[mode])
    cid = f"ipe{uuid.uuid4().hex[:10]}"
    args = k8s_args(f"pod-{cid}")
    datastore.prepare_from_cni_args(args, node)
    with Netns() as ns:
        # No usable pool: calico-ipam's error 102, passed through unchanged; nothing left behind.
        conf = {**netconf, "ipam": {"type": "calico-ipam", "ipv4_pools": ["10.201.0.0/16"]}}
        res = exec_plugin(cni_path, "calico", "ADD", conf, container_id=cid, netns=ns.path, cni_args=args,
                          extra_env=env)
        assert not res.ok and res.json["code"] == 102, res.stdout + res.stderr
        # A bad IP= in CNI_ARGS: calico-ipam's validation, error 4 (the same env rewrite reaches it).
        bad = exec_plugin(cni_path, "calico", "ADD", netconf, container_id=cid, netns=ns.path,
                          cni_args=args + ";IP=not-an-ip", extra_env=env)
        assert not bad.ok and bad.json["code"] == 4 and "IP=" in bad.json["msg"], bad.stdout
    assert allocations(backend) == [] and handles(backend) == []
    assert len(_execs(marker)) == (2 if mode == "exec" else 0)
    # calico-ipam must still be on CNI_PATH even though it runs in-process.
    os.unlink(os.path.join(cni_path, "calico-ipam"))
    with Netns() as ns:
        gone = exec_plugin(cni_path, "calico", "ADD", netconf, container_id=cid, netns=ns.path, cni_args=args,
                           extra_env=env)
    assert not gone.ok and gone.json["code"] == 7 and "failed to find IPAM plugin" in gone.json["msg"], gone.stdout


def test_inprocess_ipam_borrows_the_callers_connection(netconf, cni_path, backend) -> None:  # type: ignore[no-untyped-def]
    """run_calico_ipam with the caller's backend: calico-ipam's datastore
    calls go through it, and its close() does not close the caller's."""
    import json

    from cni import hosting
    from cni.ipam_exec import exec_ipam
    from cni.skel import read_args
    from datastore.config import DatastoreConfig, connect

    real = connect(DatastoreConfig.from_netconf(netconf))
    used: list[str] = []

    class Recording:
        def __getattr__(self, name: str) -> Any:
            used.append(name)
            return getattr(real, name)

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"brw{uuid.uuid4().hex[:8]}", "CNI_NETNS": "/var/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": cni_path}
    args = read_args(env, json.dumps(netconf).encode())
    try:
        result = exec_ipam(args, "calico-ipam", "ADD", backend=Recording())
        assert result is not None and result["ips"], result
        assert len(allocations(backend)) == 1
        assert used and "close" not in used, used
        assert hosting.backend_factory is None  # lent for the call only
        used.clear()
        assert exec_ipam(args, "calico-ipam", "DEL", backend=Recording()) is None
        assert used and "close" not in used, used
        assert allocations(backend) == [] and handles(backend) == []
    finally:
        real.close()
