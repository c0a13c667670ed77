"""Felix configuration: upstream parameter names, defaults and precedence.

Sources, highest priority first (upstream's order):

1. environment ``FELIX_<PARAM>`` (upper-case parameter name, e.g.
   ``FELIX_HEALTHPORT=9099``);
2. the config file (``/etc/calico/felix.cfg``, INI, section ``[global]``);
3. FelixConfiguration ``node.<hostname>``;
4. FelixConfiguration ``default``;
5. built-in defaults.

Parameter names match case-insensitively in every source (the datastore uses
camelCase: ``healthPort``). Durations are seconds in the environment and the
file, and Go-style strings (``90s``, ``1m30s``, ``500ms``) in FelixConfiguration;
both forms are accepted everywhere. Invalid values are logged and ignored,
as upstream does. Local-only parameters (datastore connection, hostname)
are never taken from the datastore.

pycalico additions: ``NftablesTableName`` (default ``calico``; tests use a
unique one) and ``UnknownInterfaceAction`` (``Drop`` as upstream: traffic of
a ``cali*`` interface that is not a known endpoint is dropped; ``Return``
leaves such interfaces alone, for hosts shared with other CNI tests).

Data plane: ``NftablesMode`` ``Enabled`` selects nftables, ``Disabled``
iptables (``IptablesBackend`` Legacy | NFT | Auto picks the variant).
Upstream's ``Auto`` follows kube-proxy's mode; pycalico's ``Auto`` keeps
nftables (see :func:`use_nftables`). ``IptablesLockTimeoutSecs`` bounds the
``--wait`` for the xtables lock.
"""
from __future__ import annotations

import configparser
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Mapping, Optional

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "/etc/calico/felix.cfg"


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # bool | int | seconds | str | upper | list
    default: Any
    local: bool = False
    choices: tuple[str, ...] = ()


PARAMS: tuple[Param, ...] = (
    # Datastore connection and identity (local only).
    Param("DatastoreType", "str", "etcdv3", local=True),
    Param("EtcdEndpoints", "str", "", local=True),
    Param("EtcdKeyFile", "str", "", local=True),
    Param("EtcdCertFile", "str", "", local=True),
    Param("EtcdCaFile", "str", "", local=True),
    Param("FelixHostname", "str", "", local=True),
    Param("ConfigFile", "str", DEFAULT_CONFIG_FILE, local=True),
    # Typha (local only, as upstream: needed before the datastore is read).
    Param("TyphaAddr", "str", "", local=True),
    Param("TyphaK8sServiceName", "str", "", local=True),
    Param("TyphaK8sNamespace", "str", "kube-system", local=True),
    Param("TyphaReadTimeout", "seconds", 30.0, local=True),
    Param("TyphaCAFile", "str", "", local=True),
    Param("TyphaCertFile", "str", "", local=True),
    Param("TyphaKeyFile", "str", "", local=True),
    Param("TyphaCN", "str", "", local=True),
    Param("TyphaURISAN", "str", "", local=True),
    # Health and metrics.
    Param("HealthEnabled", "bool", False),
    Param("HealthHost", "str", "localhost"),
    Param("HealthPort", "int", 9099),
    Param("PrometheusMetricsEnabled", "bool", False),
    Param("PrometheusMetricsHost", "str", ""),
    Param("PrometheusMetricsPort", "int", 9091),
    # Refresh intervals.
    Param("IptablesRefreshInterval", "seconds", 180.0),
    Param("NftablesRefreshInterval", "seconds", 180.0),
    Param("IpsetsRefreshInterval", "seconds", 90.0),
    Param("RouteRefreshInterval", "seconds", 90.0),
    Param("InterfaceRefreshInterval", "seconds", 90.0),
    Param("ReportingInterval", "seconds", 30.0),
    Param("ReportingTTL", "seconds", 90.0),
    # Dataplane behaviour.
    Param("DefaultEndpointToHostAction", "upper", "DROP", choices=("DROP", "ACCEPT", "RETURN")),
    Param("InterfacePrefix", "list", ["cali"]),
    Param("InterfaceExclude", "list", ["kube-ipvs0"]),
    Param("ChainInsertMode", "upper", "INSERT", choices=("INSERT", "APPEND")),
    Param("IptablesMarkMask", "int", 0xFFFF0000),
    Param("NftablesMarkMask", "int", 0xFFFF0000),
    Param("NftablesMode", "str", "Auto"),  # Enabled | Disabled (iptables) | Auto (= nftables here)
    Param("IptablesBackend", "str", "Auto"),  # Legacy | NFT | Auto
    Param("IptablesLockTimeoutSecs", "seconds", 10.0),
    Param("DisableConntrackInvalidCheck", "bool", False),
    Param("IPv6Support", "bool", True),
    Param("LogPrefix", "str", "calico-packet"),
    Param("NATOutgoingAddress", "str", ""),
    Param("DeviceRouteProtocol", "int", 3),
    Param("RemoveExternalRoutes", "bool", True),
    Param("RouteSyncDisabled", "bool", False),
    Param("IpForwarding", "str", "Enabled"),
    # Logging.
    Param("LogSeverityScreen", "upper", "INFO"),
    Param("LogSeverityFile", "upper", "INFO"),
    Param("LogFilePath", "str", "/var/log/calico/felix.log"),
    # Flow logs (upstream names; nftables data plane only).
    Param("FlowLogsFileEnabled", "bool", False),
    Param("FlowLogsFileDirectory", "str", "/var/log/calico/flowlogs"),
    Param("FlowLogsFlushInterval", "seconds", 300.0),
    Param("FlowLogsFileMaxFiles", "int", 5),
    Param("FlowLogsFileMaxFileSizeMB", "int", 100),
    Param("FlowLogsFileIncludeLabels", "bool", False),
    Param("FlowLogsFileIncludePolicies", "bool", False),
    # pycalico extensions.
    Param("NftablesTableName", "str", "calico"),
    Param("FlowLogsNflogGroup", "int", 1),  # NFLOG group of the rules' log statements
    Param("FlowViewerEnabled", "bool", False),  # the flow viewer page (felix.web)
    Param("FlowViewerHost", "str", "127.0.0.1"),
    Param("FlowViewerPort", "int", 9097),
    Param("UnknownInterfaceAction", "upper", "DROP", choices=("DROP", "RETURN")),
    # The CNI fast path (cni.service) hosted in Felix's process: the calico and
    # calico-ipam executables hand their requests to this socket.
    Param("CNIServiceEnabled", "bool", False, local=True),
    Param("CNIServiceSocket", "str", "/var/run/calico/cni.sock", local=True),
)

_BY_LOWER = {p.name.lower(): p for p in PARAMS}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def use_nftables(cfg: "FelixConfig") -> bool:
    """The data plane switch: only ``NftablesMode=Disabled`` selects iptables."""
    return str(cfg.nftables_mode).strip().lower() != "disabled"


def parse_duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}")
    return total


def parse_value(param: Param, value: Any) -> Any:
    if param.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "y", "t"):
            return True
        if text in ("false", "0", "no", "n", "f"):
            return False
        raise ValueError(f"invalid boolean {value!r}")
    if param.kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"invalid integer {value!r}")
        return value if isinstance(value, int) else int(str(value).strip(), 0)
    if param.kind == "seconds":
        return parse_duration(value)
    if param.kind == "upper":
        text = str(value).strip().upper()
        if param.choices and text not in param.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(param.choices)}")
        return text
    if param.kind == "list":
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [v.strip() for v in str(value).split(",") if v.strip()]
    text = "" if value is None else str(value)
    if param.name == "LogFilePath" and text.lower() == "none":
        return ""
    return text


class FelixConfig:
    """Resolved parameters. Attribute access by snake_case name
    (``config.health_port``) or :meth:`get` by upstream name."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]) -> None:
        self._values = values
        self.sources = sources

    def get(self, name: str) -> Any:
        return self._values[_BY_LOWER[name.lower()].name]

    def __getattr__(self, attr: str) -> Any:
        param = _BY_LOWER.get(attr.replace("_", ""))
        if param is None:
            raise AttributeError(attr)
        return self._values[param.name]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def differences(self, other: "FelixConfig") -> dict[str, tuple[Any, Any]]:
        return {k: (v, other._values[k]) for k, v in self._values.items() if other._values[k] != v}

    @property
    def hostname(self) -> str:
        return self.felix_hostname


def _apply_source(values: dict[str, Any], sources: dict[str, str], raw: Mapping[str, Any],
                  source: str, allow_local: bool) -> None:
    for key, value in raw.items():
        param = _BY_LOWER.get(key.lower())
        if param is None:
            log.debug("ignoring unknown parameter %s from %s", key, source)
            continue
        if param.local and not allow_local:
            continue
        if value is None or (isinstance(value, str) and value == "" and param.kind != "str"):
            continue
        try:
            values[param.name] = parse_value(param, value)
            sources[param.name] = source
        except (ValueError, TypeError) as exc:
            log.warning("ignoring invalid %s from %s: %s", param.name, source, exc)


def read_config_file(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    if not text.lstrip().startswith("["):
        text = "[global]\n" + text
    parser.read_string(text)
    out: dict[str, str] = {}
    for section in parser.sections():
        out.update(parser[section])
    return out


def env_params(env: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in env.items():
        if key.upper().startswith("FELIX_"):
            out[key[len("FELIX_"):]] = value
    # The datastore variables every Calico component understands.
    for name, param in (("DATASTORE_TYPE", "DatastoreType"), ("ETCD_ENDPOINTS", "EtcdEndpoints"),
                        ("ETCD_KEY_FILE", "EtcdKeyFile"), ("ETCD_CERT_FILE", "EtcdCertFile"),
                        ("ETCD_CA_CERT_FILE", "EtcdCaFile")):
        for candidate in (f"CALICO_{name}", name):
            if env.get(candidate) and param.lower() not in {k.lower() for k in out}:
                out[param] = env[candidate]
    return out


def load_config(
    env: Optional[Mapping[str, str]] = None,
    config_file: Optional[str] = None,
    datastore_default: Optional[Mapping[str, Any]] = None,
    datastore_node: Optional[Mapping[str, Any]] = None,
) -> FelixConfig:
    """Resolve every parameter. ``datastore_*`` are FelixConfiguration specs
    (camelCase JSON)."""
    env = os.environ if env is None else env
    values = {p.name: p.default for p in PARAMS}
    sources = {p.name: "default" for p in PARAMS}
    from_env = env_params(env)
    path = config_file or from_env.get("ConfigFile") or next(
        (v for k, v in from_env.items() if k.lower() == "configfile"), DEFAULT_CONFIG_FILE)
    _apply_source(values, sources, dict(datastore_default or {}), "FelixConfiguration default", False)
    _apply_source(values, sources, dict(datastore_node or {}), "FelixConfiguration node", False)
    _apply_source(values, sources, read_config_file(path), f"file {path}", True)
    _apply_source(values, sources, from_env, "environment", True)
    if not values["FelixHostname"]:
        values["FelixHostname"] = env.get("NODENAME") or socket.gethostname()
        sources["FelixHostname"] = "hostname"
    return FelixConfig(values, sources)
