"""Credentials the plugins read: etcd TLS files and the kubeconfig.

Installed under the CNI config directory as upstream does
(``calico-tls/etcd-{ca,cert,key}``, ``calico-kubeconfig``), each 0600 and
the TLS directory 0700: they hold private keys and bearer tokens.
"""
from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass

from calico_install import files
from calico_install.config import KUBERNETES, InstallConfig
from calico_install.errors import InstallError

log = logging.getLogger("install")
SECRET_MODE = 0o600
TLS_NAMES = ("etcd-ca", "etcd-cert", "etcd-key")


@dataclass
class Credentials:
    tls: dict[str, str]  # "etcd-ca" etc. -> installed path
    kubeconfig: str | None  # installed path
    token: str  # the service account token ("" outside a pod)
    changed: list[str]


def install(cfg: InstallConfig) -> Credentials:
    changed: list[str] = []
    tls = _install_tls(cfg, changed)
    token = _read(os.path.join(cfg.serviceaccount_dir, "token")) or ""
    kubeconfig = _install_kubeconfig(cfg, token, changed)
    return Credentials(tls, kubeconfig, token.strip(), changed)


def _tls_sources(cfg: InstallConfig) -> dict[str, str]:
    """Explicit files (ETCD_*_FILE) win over the mounted secret dir (TLS_ASSETS_DIR)."""
    sources: dict[str, str] = {}
    for name in TLS_NAMES:
        candidate = os.path.join(cfg.tls_assets_dir, name)
        if os.path.isfile(candidate) and os.path.getsize(candidate) > 0:
            sources[name] = candidate
    for name, path in (("etcd-ca", cfg.etcd_ca_cert_file), ("etcd-cert", cfg.etcd_cert_file),
                       ("etcd-key", cfg.etcd_key_file)):
        if path:
            if not os.path.isfile(path):
                raise InstallError(f"etcd TLS file {path} does not exist")
            sources[name] = path
    return sources


def _install_tls(cfg: InstallConfig, changed: list[str]) -> dict[str, str]:
    sources = _tls_sources(cfg) if cfg.datastore_type != KUBERNETES else {}
    if not sources:
        return {}
    local_dir = cfg.local(cfg.tls_dir)
    os.makedirs(local_dir, mode=0o700, exist_ok=True)
    os.chmod(local_dir, 0o700)
    installed = {}
    for name, src in sources.items():
        dst = os.path.join(local_dir, name)
        if files.copy_file(src, dst, SECRET_MODE):
            changed.append(dst)
        installed[name] = os.path.join(cfg.tls_dir, name)  # the node's path, for the conflist
    return installed


def _install_kubeconfig(cfg: InstallConfig, token: str, changed: list[str]) -> str | None:
    dst = cfg.local(cfg.kubeconfig_path)
    if cfg.kubeconfig:
        if not os.path.isfile(cfg.kubeconfig):
            raise InstallError(f"kubeconfig {cfg.kubeconfig} does not exist")
        if os.path.abspath(cfg.kubeconfig) == os.path.abspath(dst):
            os.chmod(dst, SECRET_MODE)
        elif files.copy_file(cfg.kubeconfig, dst, SECRET_MODE):
            changed.append(dst)
        return cfg.kubeconfig_path
    if token and cfg.k8s_service_host:
        if files.write_file(dst, serviceaccount_kubeconfig(cfg, token.strip()), SECRET_MODE):
            changed.append(dst)
        return cfg.kubeconfig_path
    if cfg.datastore_type == KUBERNETES:
        raise InstallError(
            "the kubernetes datastore needs a kubeconfig: set KUBECONFIG (or --kubeconfig), or run "
            f"in a pod with a service account token ({cfg.serviceaccount_dir}/token) and "
            "KUBERNETES_SERVICE_HOST"
        )
    return None


def serviceaccount_kubeconfig(cfg: InstallConfig, token: str) -> bytes:
    """A kubeconfig for the pod's service account (what upstream writes in a pod)."""
    host = cfg.k8s_service_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    server = f"{cfg.k8s_service_protocol}://{host}"
    if cfg.k8s_service_port:
        server += f":{cfg.k8s_service_port}"
    if cfg.skip_tls_verify:
        tls_line = "insecure-skip-tls-verify: true"
    else:
        ca = _read(os.path.join(cfg.serviceaccount_dir, "ca.crt"), binary=True)
        if not ca:
            raise InstallError(f"no CA certificate at {cfg.serviceaccount_dir}/ca.crt "
                               "(set SKIP_TLS_VERIFY=true to connect without one)")
        tls_line = f"certificate-authority-data: {base64.b64encode(ca).decode()}"
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    text = (
        "# Kubeconfig for the Calico CNI plugin (written by install).\n"
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: local\n"
        "  cluster:\n"
        f"    server: {q(server)}\n"
        f"    {tls_line}\n"
        "users:\n"
        "- name: calico\n"
        "  user:\n"
        f"    token: {q(token)}\n"
        "contexts:\n"
        "- name: calico-context\n"
        "  context:\n"
        "    cluster: local\n"
        "    user: calico\n"
        "current-context: calico-context\n"
    )
    return text.encode()


def _read(path: str, binary: bool = False):  # type: ignore[no-untyped-def]
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except OSError:
        return None
