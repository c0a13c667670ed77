"""The installer's settings: command-line flags over environment over defaults.

Environment names are upstream install-cni's where it has one (CNI_NET_DIR,
CNI_CONF_NAME, CNI_OLD_CONF_NAME, CNI_NETWORK_CONFIG, CNI_NETWORK_CONFIG_FILE,
SKIP_CNI_BINARIES, UPDATE_CNI_BINARIES, TLS_ASSETS_DIR, SLEEP, LOG_LEVEL,
LOG_FILE_PATH, DATASTORE_TYPE, KUBERNETES_NODE_NAME, CNI_MTU, ETCD_ENDPOINTS,
ETCD_DISCOVERY_SRV, KUBERNETES_SERVICE_HOST/PORT/PROTOCOL, SKIP_TLS_VERIFY)
and Calico's usual names otherwise (ETCD_CA_CERT_FILE, ETCD_CERT_FILE,
ETCD_KEY_FILE, KUBECONFIG). Ours only: CNI_BIN_DIR, CNI_PLUGINS_DIR,
CNI_BANDWIDTH, CNI_CONF_VERSION, CNI_HOST_ROOT, PYCALICO_BUNDLE_DIR,
APPLY_CRDS, APPLY_RBAC, CALICO_MANIFESTS_DIR.

Paths are as the node sees them (they end up inside the conflist). In a
container with the node's filesystem mounted at, say, /host (upstream mounts
/host/opt/cni/bin and /host/etc/cni/net.d), ``--host-root /host`` makes the
installer write under /host while the conflist still says /etc/cni/net.d.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from calico_install.errors import InstallError

ETCD = "etcdv3"
KUBERNETES = "kubernetes"
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off", ""}


def parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InstallError(f"{name}={value!r} is not a boolean (use true or false)")


@dataclass
class InstallConfig:
    bin_dir: str = "/opt/cni/bin"  # as seen on the node
    conf_dir: str = "/etc/cni/net.d"  # as seen on the node
    host_root: str = ""  # where the node's filesystem is mounted ("" = we are on the node)
    conf_name: str = "10-calico.conflist"
    old_conf_name: str = "10-calico.conflist"
    source_dir: str | None = None
    plugins_dir: str | None = None
    skip_binaries: list[str] = field(default_factory=list)
    update_binaries: bool = True
    network_config: str | None = None
    network_config_file: str | None = None
    sleep: bool = False
    log_level: str = "info"
    log_file_path: str = "/var/log/calico/cni/cni.log"
    datastore_type: str = KUBERNETES
    nodename: str = ""
    mtu: int = 1500
    etcd_endpoints: str = ""
    etcd_discovery_srv: str = ""
    etcd_ca_cert_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    tls_assets_dir: str = "/calico-secrets"
    kubeconfig: str | None = None
    serviceaccount_dir: str = SERVICEACCOUNT_DIR
    k8s_service_host: str = ""
    k8s_service_port: str = ""
    k8s_service_protocol: str = "https"
    skip_tls_verify: bool = False
    bandwidth: bool = False
    cni_version: str = "1.0.0"
    extra_config: dict[str, Any] = field(default_factory=dict)
    verify: bool = True
    resync_seconds: float = 10.0
    apply_crds: bool = False  # load(): true by default with the kubernetes datastore
    apply_rbac: bool = False
    manifests_dir: str | None = None  # None: the bundle's / checkout's manifests

    def local(self, node_path: str) -> str:
        """Where a node path is, for this process (under ``host_root``)."""
        if not self.host_root:
            return node_path
        return os.path.join(self.host_root, os.path.abspath(node_path).lstrip("/"))

    @property
    def tls_dir(self) -> str:
        """Where etcd credentials are installed (upstream: <net dir>/calico-tls)."""
        return os.path.join(self.conf_dir, "calico-tls")

    @property
    def kubeconfig_path(self) -> str:
        """Where the plugin's kubeconfig is installed (upstream: <net dir>/calico-kubeconfig)."""
        return os.path.join(self.conf_dir, "calico-kubeconfig")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="install",
        description="Install the calico and calico-ipam CNI plugins and the CNI network config "
                    "on this node (upstream's install-cni). Flags override environment variables.",
    )
    a = p.add_argument
    a("--bin-dir", help="CNI plugin directory [CNI_BIN_DIR, /opt/cni/bin]")
    a("--conf-dir", help="CNI config directory [CNI_NET_DIR, /etc/cni/net.d]")
    a("--conf-name", help="config file name [CNI_CONF_NAME, 10-calico.conflist]")
    a("--host-root", help="the node's / is mounted here (e.g. /host); paths stay node paths "
                          "in the conflist [CNI_HOST_ROOT]")
    a("--source-dir", help="the frozen bundle (or a dir with calico, calico-ipam) to install "
                           "[PYCALICO_BUNDLE_DIR; default: the bundle this installer runs from]")
    a("--plugins-dir", help="also install the executables in this dir (portmap, bandwidth, ...) "
                            "[CNI_PLUGINS_DIR]")
    a("--datastore-type", choices=(ETCD, KUBERNETES), help="[DATASTORE_TYPE; etcdv3 if ETCD_ENDPOINTS "
                                                            "is set, else kubernetes]")
    a("--etcd-endpoints", help="[ETCD_ENDPOINTS]")
    a("--etcd-ca-cert-file", help="installed into <conf dir>/calico-tls/etcd-ca [ETCD_CA_CERT_FILE]")
    a("--etcd-cert-file", help="installed into <conf dir>/calico-tls/etcd-cert [ETCD_CERT_FILE]")
    a("--etcd-key-file", help="installed into <conf dir>/calico-tls/etcd-key [ETCD_KEY_FILE]")
    a("--kubeconfig", help="kubeconfig installed as <conf dir>/calico-kubeconfig [KUBECONFIG; default: "
                           "built from the pod's service account when running in a pod]")
    a("--serviceaccount-dir", help=argparse.SUPPRESS)
    a("--nodename", help="[KUBERNETES_NODE_NAME, hostname]")
    a("--mtu", type=int, help="[CNI_MTU, 1500]")
    a("--log-level", help="[LOG_LEVEL, info]")
    a("--log-file-path", help="[LOG_FILE_PATH, /var/log/calico/cni/cni.log]")
    a("--bandwidth", action="store_true", default=None,
      help="chain the bandwidth plugin after portmap [CNI_BANDWIDTH]")
    a("--cni-version", help="cniVersion of the conflist [CNI_CONF_VERSION, 1.0.0]")
    a("--extra-config", help="JSON object merged into the calico plugin's entry "
                             "(e.g. '{\"ipam_lock_file\": \"/run/x.lock\"}')")
    a("--sleep", action="store_true", default=None,
      help="stay running and reinstall when inputs change [SLEEP, false]")
    a("--no-verify", action="store_true", help="do not exec the installed calico once to check it runs")
    a("--apply-crds", dest="apply_crds", action="store_true", default=None,
      help="kubernetes datastore: create/update Calico's CRDs (crds/crds.yaml) and wait until they are "
           "established [APPLY_CRDS, true with the kubernetes datastore]")
    a("--no-apply-crds", dest="apply_crds", action="store_false", help="do not touch the CRDs")
    a("--apply-rbac", action="store_true", default=None,
      help="with --apply-crds: also apply the RBAC manifests (rbac/*.yaml) [APPLY_RBAC, false]")
    a("--manifests-dir", help="directory with crds/crds.yaml and rbac/ [CALICO_MANIFESTS_DIR; default: "
                              "the bundle's manifests/, or packaging/manifests in a checkout]")
    return p


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> InstallConfig:
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)

    def pick(flag: Any, *names: str, default: Any = None) -> Any:
        if flag is not None:
            return flag
        for name in names:
            if env.get(name):
                return env[name]
        return default

    cfg = InstallConfig()
    cfg.bin_dir = pick(args.bin_dir, "CNI_BIN_DIR", default=cfg.bin_dir)
    cfg.conf_dir = pick(args.conf_dir, "CNI_NET_DIR", default=cfg.conf_dir)
    cfg.host_root = pick(args.host_root, "CNI_HOST_ROOT", default="")
    cfg.conf_name = pick(args.conf_name, "CNI_CONF_NAME", default=cfg.conf_name)
    cfg.old_conf_name = pick(None, "CNI_OLD_CONF_NAME", default=cfg.old_conf_name)
    cfg.source_dir = pick(args.source_dir, "PYCALICO_BUNDLE_DIR", default=_own_bundle())
    cfg.plugins_dir = pick(args.plugins_dir, "CNI_PLUGINS_DIR")
    cfg.skip_binaries = [s.strip() for s in env.get("SKIP_CNI_BINARIES", "").split(",") if s.strip()]
    cfg.update_binaries = parse_bool("UPDATE_CNI_BINARIES", env.get("UPDATE_CNI_BINARIES", "true"))
    cfg.network_config = env.get("CNI_NETWORK_CONFIG") or None
    cfg.network_config_file = env.get("CNI_NETWORK_CONFIG_FILE") or None
    cfg.sleep = args.sleep if args.sleep is not None else parse_bool("SLEEP", env.get("SLEEP", "false"))
    cfg.log_level = pick(args.log_level, "LOG_LEVEL", default=cfg.log_level)
    cfg.log_file_path = pick(args.log_file_path, "LOG_FILE_PATH", default=cfg.log_file_path)
    cfg.etcd_endpoints = pick(args.etcd_endpoints, "ETCD_ENDPOINTS", default="")
    cfg.etcd_discovery_srv = env.get("ETCD_DISCOVERY_SRV", "")
    cfg.datastore_type = pick(args.datastore_type, "DATASTORE_TYPE",
                              default=ETCD if cfg.etcd_endpoints else KUBERNETES)
    if cfg.datastore_type not in (ETCD, KUBERNETES):
        raise InstallError(f"DATASTORE_TYPE={cfg.datastore_type!r}: use {ETCD} or {KUBERNETES}")
    if cfg.datastore_type == ETCD and not cfg.etcd_endpoints:
        raise InstallError("the etcdv3 datastore needs ETCD_ENDPOINTS (or --etcd-endpoints)")
    cfg.etcd_ca_cert_file = pick(args.etcd_ca_cert_file, "ETCD_CA_CERT_FILE")
    cfg.etcd_cert_file = pick(args.etcd_cert_file, "ETCD_CERT_FILE")
    cfg.etcd_key_file = pick(args.etcd_key_file, "ETCD_KEY_FILE")
    cfg.tls_assets_dir = env.get("TLS_ASSETS_DIR") or cfg.tls_assets_dir
    cfg.kubeconfig = pick(args.kubeconfig, "KUBECONFIG")
    cfg.serviceaccount_dir = args.serviceaccount_dir or cfg.serviceaccount_dir
    cfg.k8s_service_host = env.get("KUBERNETES_SERVICE_HOST", "")
    cfg.k8s_service_port = env.get("KUBERNETES_SERVICE_PORT", "")
    cfg.k8s_service_protocol = env.get("KUBERNETES_SERVICE_PROTOCOL") or "https"
    cfg.skip_tls_verify = parse_bool("SKIP_TLS_VERIFY", env.get("SKIP_TLS_VERIFY", "false"))
    cfg.nodename = pick(args.nodename, "KUBERNETES_NODE_NAME", default=socket.gethostname().lower())
    mtu = pick(args.mtu, "CNI_MTU", default=1500)
    try:
        cfg.mtu = int(mtu)
    except ValueError:
        raise InstallError(f"CNI_MTU={mtu!r} is not a number") from None
    cfg.bandwidth = args.bandwidth if args.bandwidth is not None else parse_bool(
        "CNI_BANDWIDTH", env.get("CNI_BANDWIDTH", "false"))
    cfg.cni_version = pick(args.cni_version, "CNI_CONF_VERSION", default=cfg.cni_version)
    if args.extra_config:
        try:
            extra = json.loads(args.extra_config)
        except ValueError as exc:
            raise InstallError(f"--extra-config is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise InstallError("--extra-config must be a JSON object")
        cfg.extra_config = extra
    cfg.verify = not args.no_verify
    cfg.apply_crds = args.apply_crds if args.apply_crds is not None else parse_bool(
        "APPLY_CRDS", env.get("APPLY_CRDS", "true" if cfg.datastore_type == KUBERNETES else "false"))
    cfg.apply_rbac = args.apply_rbac if args.apply_rbac is not None else parse_bool(
        "APPLY_RBAC", env.get("APPLY_RBAC", "false"))
    if cfg.apply_crds and cfg.datastore_type != KUBERNETES:
        raise InstallError("APPLY_CRDS / --apply-crds needs the kubernetes datastore (DATASTORE_TYPE=kubernetes)")
    cfg.manifests_dir = pick(args.manifests_dir, "CALICO_MANIFESTS_DIR")
    return cfg


def _own_bundle() -> str | None:
    """The bundle directory when running frozen (the installer ships inside it)."""
    if getattr(sys, "frozen", False):
        return os.path.dirname(os.path.realpath(sys.executable))
    return None
