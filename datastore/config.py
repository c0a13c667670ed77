"""How a component finds its datastore and its node name (upstream's names).

Sources, as upstream: the CNI network config fields (``datastore_type``,
``etcd_endpoints``, ``etcd_ca_cert_file``, ...), the environment
(``DATASTORE_TYPE``, ``ETCD_ENDPOINTS``, ``ETCD_CA_CERT_FILE``, ``KUBECONFIG``,
also with a ``CALICO_`` prefix) and calicoctl's ``CalicoAPIConfig`` file.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Mapping

from datastore.backend import Backend

ETCD = "etcdv3"
KUBERNETES = "kubernetes"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"


@dataclass
class DatastoreConfig:
    datastore_type: str = ETCD
    etcd_endpoints: str = ""
    etcd_key_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_ca_cert_file: str | None = None
    kubeconfig: str | None = None
    k8s_api_endpoint: str | None = None
    timeout: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DatastoreConfig":
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(f"CALICO_{name}") or env.get(name) or None

        endpoints = get("ETCD_ENDPOINTS") or ""
        kind = get("DATASTORE_TYPE") or (ETCD if endpoints else KUBERNETES)
        return cls(
            datastore_type=kind,
            etcd_endpoints=endpoints,
            etcd_key_file=get("ETCD_KEY_FILE"),
            etcd_cert_file=get("ETCD_CERT_FILE"),
            etcd_ca_cert_file=get("ETCD_CA_CERT_FILE"),
            kubeconfig=get("KUBECONFIG"),
            k8s_api_endpoint=get("K8S_API_ENDPOINT"),
        )

    @classmethod
    def from_netconf(cls, conf: Mapping[str, Any]) -> "DatastoreConfig":
        """From a CNI network config (fields already type-checked)."""
        endpoints = conf.get("etcd_endpoints") or ""
        kube = conf.get("kubernetes") or {}
        kind = conf.get("datastore_type") or (ETCD if endpoints else KUBERNETES)
        return cls(
            datastore_type=kind,
            etcd_endpoints=endpoints,
            etcd_key_file=conf.get("etcd_key_file") or None,
            etcd_cert_file=conf.get("etcd_cert_file") or None,
            etcd_ca_cert_file=conf.get("etcd_ca_cert_file") or None,
            kubeconfig=kube.get("kubeconfig") or None,
            k8s_api_endpoint=kube.get("k8s_api_root") or None,
        )


def connect(config: DatastoreConfig) -> Backend:
    """Build the backend for ``config`` (imports only what that backend needs)."""
    if config.datastore_type == ETCD:
        if not config.etcd_endpoints:
            raise ValueError("datastore_type is etcdv3 but no etcd_endpoints are configured")
        from datastore.etcd import EtcdBackend

        return EtcdBackend(
            config.etcd_endpoints,
            ca_cert_file=config.etcd_ca_cert_file,
            cert_file=config.etcd_cert_file,
            key_file=config.etcd_key_file,
            timeout=config.timeout,
        )
    if config.datastore_type == KUBERNETES:
        from datastore.kubernetes import KubernetesBackend

        return KubernetesBackend(config)
    raise ValueError(f"unknown datastore_type {config.datastore_type!r} (etcdv3 or kubernetes)")


def node_name(
    explicit: str | None = None,
    nodename_file: str | None = None,
    file_optional: bool = True,
) -> str:
    """Upstream's priority: explicit ``nodename`` > ``nodename_file`` >
    ``NODENAME`` env > hostname."""
    if explicit:
        return explicit
    path = nodename_file or DEFAULT_NODENAME_FILE
    try:
        with open(path, encoding="utf-8") as f:
            name = f.read().strip()
            if name:
                return name
    except FileNotFoundError:
        if not file_optional:
            raise
    return os.environ.get("NODENAME") or socket.gethostname()
