"""Where calicoctl finds its datastore: a ``CalicoAPIConfig`` file or the environment.

As upstream (libcalico-go ``apiconfig``): if the config file exists it is the
only source; otherwise the environment is read (``DATASTORE_TYPE``,
``ETCD_ENDPOINTS``, ``ETCD_KEY_FILE``, ``ETCD_CERT_FILE``, ``ETCD_CA_CERT_FILE``,
``KUBECONFIG``, ``K8S_API_ENDPOINT``, each also with a ``CALICO_`` prefix,
which wins).  The datastore type defaults to etcdv3 when endpoints are set,
otherwise kubernetes (with ``$HOME/.kube/config`` when it exists).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from datastore.config import ETCD, KUBERNETES, DatastoreConfig

DEFAULT_CONFIG_PATH = "/etc/calico/calicoctl.cfg"
API_VERSION = "projectcalico.org/v3"
KIND = "CalicoAPIConfig"

# CalicoAPIConfig spec field -> DatastoreConfig attribute.
_SPEC_FIELDS: dict[str, str] = {
    "datastoreType": "datastore_type",
    "etcdEndpoints": "etcd_endpoints",
    "etcdKeyFile": "etcd_key_file",
    "etcdCertFile": "etcd_cert_file",
    "etcdCACertFile": "etcd_ca_cert_file",
    "kubeconfig": "kubeconfig",
    "k8sAPIEndpoint": "k8s_api_endpoint",
}
# Accepted but not used by our backends (kept so upstream config files load).
_IGNORED_SPEC_FIELDS = frozenset(
    {
        "etcdUsername",
        "etcdPassword",
        "etcdKey",
        "etcdCert",
        "etcdCACert",
        "k8sKeyFile",
        "k8sCertFile",
        "k8sCAFile",
        "k8sAPIToken",
        "k8sInsecureSkipTLSVerify",
        "k8sDisableNodePoll",
        "k8sClientQPS",
        "kubeconfigInline",
        "calicoAPIGroup",
    }
)


class ConfigError(Exception):
    """The client configuration cannot be loaded."""


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> DatastoreConfig:
    """The datastore config from ``path`` (``None``: the default path, which
    may be absent) or, when no file applies, from the environment."""
    env = os.environ if env is None else env
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    if os.path.exists(path):
        return load_config_file(path, env)
    if explicit and path != DEFAULT_CONFIG_PATH:
        raise ConfigError(f"config file {path} does not exist")
    return _defaults(DatastoreConfig.from_env(env), env)


def load_config_file(path: str, env: Mapping[str, str] | None = None) -> DatastoreConfig:
    env = os.environ if env is None else env
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        return _defaults(parse_config(text), env)
    except ConfigError as e:
        raise ConfigError(f"syntax error in {path}: {e}") from None


def parse_config(text: str) -> DatastoreConfig:
    import yaml

    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"failed to parse config as YAML/JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError("failed to parse config as YAML/JSON: not a mapping")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown:
        raise ConfigError(f"unknown field {sorted(unknown)[0]!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise ConfigError(f"invalid config file: unknown APIVersion '{doc.get('apiVersion') or ''}'")
    if doc.get("kind") != KIND:
        raise ConfigError(f"invalid config file: expected kind '{KIND}', got '{doc.get('kind') or ''}'")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError("spec must be a mapping")
    config = DatastoreConfig(datastore_type="", etcd_endpoints="")
    for key, value in spec.items():
        if key in _SPEC_FIELDS:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"spec.{key} must be a string")
            setattr(config, _SPEC_FIELDS[key], value or ("" if key in ("datastoreType", "etcdEndpoints") else None))
        elif key not in _IGNORED_SPEC_FIELDS:
            raise ConfigError(f"unknown field 'spec.{key}'")
    return config


def _defaults(config: DatastoreConfig, env: Mapping[str, str]) -> DatastoreConfig:
    if not config.datastore_type:
        config.datastore_type = ETCD if config.etcd_endpoints else KUBERNETES
    if config.datastore_type == KUBERNETES and not (config.kubeconfig or config.k8s_api_endpoint):
        home = env.get("HOME")
        if home and os.path.exists(os.path.join(home, ".kube", "config")):
            config.kubeconfig = os.path.join(home, ".kube", "config")
    return config
