"""Fixtures for the calico CNI plugin tests: a pool in a real datastore (etcd,
and a real kube-apiserver: every test runs in both modes) and a netconf."""
from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from tests.support.cni_exec import PluginResult, exec_plugin
from tests.support.pools import create_pool

POOL_CIDR = "10.123.0.0/16"
POOL6_CIDR = "fd00:123::/48"


@pytest.fixture
def node() -> str:
    return f"node-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def netconf(datastore, node, tmp_path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    create_pool(datastore.backend, "test-pool", POOL_CIDR)
    create_pool(datastore.backend, "test-pool-v6", POOL6_CIDR)
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        **datastore.netconf,
        "nodename": node,
        "log_level": "debug",
        "log_file_path": str(tmp_path / "cni.log"),
        "ipam_lock_file": str(tmp_path / "ipam.lock"),
        "mtu": 1450,
        "ipam": {"type": "calico-ipam"},
    }


Call = Callable[..., PluginResult]


@pytest.fixture
def calico(cni_path: str, datastore, node) -> Call:  # type: ignore[no-untyped-def]
    def call(command: str, conf: Any, **kw: Any) -> PluginResult:
        if command == "ADD":
            # Kubernetes mode: kubelet would have created the pod already.
            datastore.prepare_from_cni_args(kw.get("cni_args", ""), node)
        return exec_plugin(cni_path, "calico", command, conf, **kw)

    return call
