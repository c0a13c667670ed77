"""Fixtures for calico-ipam tests: a real datastore (etcd, and a real
kube-apiserver: every test runs in both modes), the real executable, temp
lock and log files."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import pytest

from tests.support.cni_exec import PluginResult, exec_plugin

T = TypeVar("T")
NETWORK = "k8s-pod-network"


@dataclass
class IPAMEnv:
    backend: Any  # EtcdBackend or KubernetesBackend
    endpoint: str  # etcd endpoint ("" in Kubernetes mode)
    cni_path: str
    tmp: str
    datastore: Any = None  # tests.kubernetes.fixtures.Datastore

    def conf(self, node: str = "node-1", cni_version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
        return {
            "cniVersion": cni_version,
            "name": NETWORK,
            "type": "calico",
            **self.datastore.netconf,
            "nodename": node,
            "ipam_lock_file": os.path.join(self.tmp, "locks", node, "ipam.lock"),
            "log_file_path": os.path.join(self.tmp, "cni.log"),
            "log_level": "info",
            "ipam": {"type": "calico-ipam", **ipam},
        }

    def run(self, command: str, conf: dict[str, Any], container_id: str = "", cni_args: str = "",
            ifname: str = "eth0") -> PluginResult:
        netns = "/var/run/netns/ipam-test" if command in ("ADD", "CHECK") else ""
        return exec_plugin(self.cni_path, "calico-ipam", command, conf, container_id=container_id,
                           netns=netns, ifname=ifname, cni_args=cni_args)

    def add(self, container_id: str, conf: dict[str, Any] | None = None, cni_args: str = "") -> PluginResult:
        return self.run("ADD", conf or self.conf(), container_id, cni_args)

    def delete(self, container_id: str, conf: dict[str, Any] | None = None, cni_args: str = "") -> PluginResult:
        return self.run("DEL", conf or self.conf(), container_id, cni_args)


def parallel(fn: Callable[..., T], items: list[Any], workers: int = 50) -> list[T]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


@pytest.fixture
def ipam_env(datastore: Any, tmp_path: Any, cni_path: str) -> Iterator[IPAMEnv]:
    yield IPAMEnv(datastore.backend, datastore.netconf.get("etcd_endpoints", ""), cni_path, str(tmp_path),
                  datastore)
