"""The node agent hosts the CNI service: Felix with ``FELIX_CNISERVICEENABLED``
serves the socket, and the ``calico`` executable's ADD/DEL go through it."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import uuid

import pytest

from cni.service import stats
from tests.cni.test_plugin import allocations, endpoints, k8s_args
from tests.felix.harness import FelixProcess
from tests.support.cni_exec import exec_plugin
from tests.support.netns import Netns, cali_links

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def _wait_for_socket(felix: FelixProcess, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if not felix.running():
            raise AssertionError(f"Felix exited; log:\n{felix.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"Felix did not open the CNI socket {path}; log:\n{felix.log_tail()}")
        time.sleep(0.05)


def test_felix_serves_the_cni_socket(etcd_server, netconf, node, cni_path, etcd_backend) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    workdir = tempfile.mkdtemp(prefix="pcff-", dir="/tmp")  # short: unix socket paths are limited
    sock = os.path.join(workdir, "cni.sock")
    table = f"pcff{uuid.uuid4().hex[:6]}"
    felix = FelixProcess(etcd_server.endpoint, node, table, workdir, extra_env={
        "FELIX_CNISERVICEENABLED": "true",
        "FELIX_CNISERVICESOCKET": sock,
        "FELIX_IPV6SUPPORT": "false",
    })
    try:
        felix.start()
        _wait_for_socket(felix, sock)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        env = {"PYCALICO_CNI_SOCKET": sock}
        with Netns() as ns:
            kw = dict(container_id=f"felix-host-{uuid.uuid4().hex[:6]}", netns=ns.path,
                      cni_args=k8s_args("felixhosted"), extra_env=env)
            before = int(stats(sock)["served"])
            add = exec_plugin(cni_path, "calico", "ADD", netconf, **kw)
            assert add.ok, add.stdout + add.stderr + felix.log_tail()
            assert int(stats(sock)["served"]) == before + 1, "the ADD did not go through Felix's socket"
            host_if = add.json["interfaces"][0]["name"]
            assert host_if in cali_links()
            assert len(allocations(etcd_backend)) == 1 and len(endpoints(etcd_backend)) == 1
            dele = exec_plugin(cni_path, "calico", "DEL", netconf, **kw)
            assert dele.ok, dele.stdout + dele.stderr
            assert int(stats(sock)["served"]) == before + 2
            assert host_if not in cali_links()
        assert allocations(etcd_backend) == [] and endpoints(etcd_backend) == []
        felix.stop()
        assert not os.path.exists(sock), "Felix left its CNI socket behind"
    finally:
        felix.stop()
        from tests.felix.harness import nft

        nft("delete", "table", "inet", table, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
