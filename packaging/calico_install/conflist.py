"""The CNI network config list the installer writes (10-calico.conflist).

Default: ``calico`` (with ``calico-ipam``) chained with the reference
``portmap`` plugin, and ``bandwidth`` when asked for. An operator template
(CNI_NETWORK_CONFIG / CNI_NETWORK_CONFIG_FILE) replaces the default, with
upstream's ``__PLACEHOLDER__`` substitutions.
"""
from __future__ import annotations

import json
from typing import Any

from calico_install.config import KUBERNETES, InstallConfig
from calico_install.errors import InstallError

NETWORK_NAME = "k8s-pod-network"


def calico_entry(cfg: InstallConfig, tls: dict[str, str], kubeconfig: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "calico",
        "log_level": cfg.log_level,
        "log_file_path": cfg.log_file_path,
        "datastore_type": cfg.datastore_type,
        "nodename": cfg.nodename,
        "mtu": cfg.mtu,
        "ipam": {"type": "calico-ipam"},
    }
    if cfg.datastore_type != KUBERNETES:
        entry["etcd_endpoints"] = cfg.etcd_endpoints
        for field, name in (("etcd_ca_cert_file", "etcd-ca"), ("etcd_cert_file", "etcd-cert"),
                            ("etcd_key_file", "etcd-key")):
            if name in tls:
                entry[field] = tls[name]
    if kubeconfig:
        # Kubernetes policy (pod labels, namespaces) needs the API server.
        entry["policy"] = {"type": "k8s"}
        entry["kubernetes"] = {"kubeconfig": kubeconfig}
    entry.update(cfg.extra_config)
    return entry


def default_conflist(cfg: InstallConfig, tls: dict[str, str], kubeconfig: str | None) -> dict[str, Any]:
    plugins: list[dict[str, Any]] = [
        calico_entry(cfg, tls, kubeconfig),
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
    ]
    if cfg.bandwidth:
        plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    return {"name": NETWORK_NAME, "cniVersion": cfg.cni_version, "plugins": plugins}


def render_template(template: str, cfg: InstallConfig, tls: dict[str, str], kubeconfig: str | None,
                    token: str) -> dict[str, Any]:
    values = {
        "LOG_LEVEL": cfg.log_level,
        "LOG_FILE_PATH": cfg.log_file_path,
        "LOG_FILE_MAX_SIZE": "100",
        "LOG_FILE_MAX_AGE": "30",
        "LOG_FILE_MAX_COUNT": "10",
        "DATASTORE_TYPE": cfg.datastore_type,
        "KUBERNETES_NODE_NAME": cfg.nodename,
        "KUBECONFIG_FILEPATH": kubeconfig or cfg.kubeconfig_path,
        "CNI_MTU": str(cfg.mtu),
        "KUBERNETES_SERVICE_HOST": cfg.k8s_service_host,
        "KUBERNETES_SERVICE_PORT": cfg.k8s_service_port,
        "SERVICEACCOUNT_TOKEN": token,
        "ETCD_CERT_FILE": tls.get("etcd-cert", ""),
        "ETCD_CA_CERT_FILE": tls.get("etcd-ca", ""),
        "ETCD_KEY_FILE": tls.get("etcd-key", ""),
        "ETCD_ENDPOINTS": cfg.etcd_endpoints,
        "ETCD_DISCOVERY_SRV": cfg.etcd_discovery_srv,
    }
    text = template
    for name, value in values.items():
        text = text.replace(f"__{name}__", value)
    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise InstallError(f"the CNI network config template is not valid JSON after substitution: {exc}\n"
                           f"{text}") from None
    if not isinstance(conf, dict):
        raise InstallError("the CNI network config template must be a JSON object")
    return conf


def render(conf: dict[str, Any]) -> bytes:
    return (json.dumps(conf, indent=2) + "\n").encode()
