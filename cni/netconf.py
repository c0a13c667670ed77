"""The ``calico`` / ``calico-ipam`` network config (upstream's field names).

Unknown fields are ignored; a known field of the wrong type is CNI error 7
naming the field. Parsed with plain dataclasses rather than pydantic: this
runs on every pod ADD/DEL, and building pydantic models here cost ~100 ms per
exec (see README "Where an ADD's time goes").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from cni.errors import INVALID_NETWORK_CONFIG, CNIError

T = TypeVar("T")


def _invalid(path: str, message: str) -> CNIError:
    return CNIError(INVALID_NETWORK_CONFIG, f"invalid network config field {path!r}: {message}")


def _get(conf: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str, default: Any = None) -> Any:
    value = conf.get(key, default)
    if value is None:
        return default
    # bool is an int subclass: never accept it where a number is wanted.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _invalid(path, f"expected {_type_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise _invalid(path, f"expected {_type_name(kind)}, got {type(value).__name__}")
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate from a JSON "\udcXX" escape
            raise _invalid(path, "not valid UTF-8") from None
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _string_list(conf: dict[str, Any], key: str, path: str) -> list[str]:
    items = _get(conf, key, list, path, [])
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _invalid(f"{path}[{i}]", "expected a string")
        _get({key: item}, key, str, f"{path}[{i}]")  # the same UTF-8 check
    return list(items)


def _section(conf: dict[str, Any], key: str, parse: Callable[[dict[str, Any], str], T], default: T) -> T:
    value = _get(conf, key, dict, key)
    return default if value is None else parse(value, key)


def _truthy(value: str | bool | None, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return value.lower() == "true"


@dataclass
class IPAMConf:
    type: str
    assign_ipv4: str | bool | None = None
    assign_ipv6: str | bool | None = None
    ipv4_pools: list[str] = field(default_factory=list)
    ipv6_pools: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # every other key (routes, subnet, ...)

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str) -> "IPAMConf":
        kind = _get(raw, "type", str, f"{path}.type")
        if not kind:
            raise _invalid(f"{path}.type", "field required")
        flags = {}
        for name in ("assign_ipv4", "assign_ipv6"):
            value = _get(raw, name, (str, bool), f"{path}.{name}")
            if isinstance(value, str) and value.lower() not in ("true", "false"):
                raise _invalid(f"{path}.{name}", 'must be "true" or "false"')
            flags[name] = value
        known = {"type", "assign_ipv4", "assign_ipv6", "ipv4_pools", "ipv6_pools"}
        return cls(
            type=kind,
            ipv4_pools=_string_list(raw, "ipv4_pools", f"{path}.ipv4_pools"),
            ipv6_pools=_string_list(raw, "ipv6_pools", f"{path}.ipv6_pools"),
            extra={k: v for k, v in raw.items() if k not in known},
            **flags,
        )

    def wants_ipv4(self) -> bool:
        return _truthy(self.assign_ipv4, default=True)

    def wants_ipv6(self) -> bool:
        return _truthy(self.assign_ipv6, default=False)


@dataclass
class KubernetesConf:
    kubeconfig: str | None = None
    k8s_api_root: str | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str) -> "KubernetesConf":
        return cls(_get(raw, "kubeconfig", str, f"{path}.kubeconfig"),
                   _get(raw, "k8s_api_root", str, f"{path}.k8s_api_root"))


@dataclass
class PolicyConf:
    type: str | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str) -> "PolicyConf":
        return cls(_get(raw, "type", str, f"{path}.type"))


@dataclass
class ContainerSettings:
    allow_ip_forwarding: bool = False

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str) -> "ContainerSettings":
        return cls(_get(raw, "allow_ip_forwarding", bool, f"{path}.allow_ip_forwarding", False))


@dataclass
class DNSConf:
    nameservers: list[str] = field(default_factory=list)
    domain: str | None = None
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str) -> "DNSConf":
        return cls(
            nameservers=_string_list(raw, "nameservers", f"{path}.nameservers"),
            domain=_get(raw, "domain", str, f"{path}.domain"),
            search=_string_list(raw, "search", f"{path}.search"),
            options=_string_list(raw, "options", f"{path}.options"),
        )

    def to_result(self) -> dict[str, Any]:
        """The result's ``dns`` object: only what is set."""
        out: dict[str, Any] = {}
        for key in ("nameservers", "domain", "search", "options"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


@dataclass
class NetConf:
    name: str
    type: str
    cni_version: str = "0.2.0"
    datastore_type: str | None = None
    etcd_endpoints: str | None = None
    etcd_key_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_ca_cert_file: str | None = None
    kubernetes: KubernetesConf = field(default_factory=KubernetesConf)
    nodename: str | None = None
    nodename_file: str | None = None
    nodename_file_optional: bool = True
    mtu: int = 1500
    ipam: IPAMConf | None = None
    log_level: str = "info"
    log_file_path: str = "/var/log/calico/cni/cni.log"
    policy: PolicyConf = field(default_factory=PolicyConf)
    container_settings: ContainerSettings = field(default_factory=ContainerSettings)
    dns: DNSConf | None = None
    ipam_lock_file: str = "/var/run/calico/ipam.lock"
    prev_result: dict[str, Any] | None = None
    runtime_config: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)


_STRINGS = ("etcd_endpoints", "etcd_key_file", "etcd_cert_file", "etcd_ca_cert_file", "nodename",
            "nodename_file", "log_level", "log_file_path", "ipam_lock_file")


def parse_netconf(conf: dict[str, Any]) -> NetConf:
    for required in ("name", "type"):
        if not _get(conf, required, str, required):
            raise _invalid(required, "field required")
    datastore_type = _get(conf, "datastore_type", str, "datastore_type")
    if datastore_type not in (None, "etcdv3", "kubernetes"):
        raise _invalid("datastore_type", "must be 'etcdv3' or 'kubernetes'")
    mtu = _get(conf, "mtu", int, "mtu", 0) or 1500  # 0: upstream's "use the default"
    if not 68 <= mtu <= 65535:
        raise _invalid("mtu", "must be between 68 and 65535")
    strings = {name: _get(conf, name, str, name) for name in _STRINGS}
    strings = {k: v for k, v in strings.items() if v is not None}
    return NetConf(
        name=conf["name"],
        type=conf["type"],
        cni_version=_get(conf, "cniVersion", str, "cniVersion", "0.2.0"),
        datastore_type=datastore_type,
        kubernetes=_section(conf, "kubernetes", KubernetesConf.parse, KubernetesConf()),
        nodename_file_optional=_get(conf, "nodename_file_optional", bool, "nodename_file_optional", True),
        mtu=mtu,
        ipam=_section(conf, "ipam", IPAMConf.parse, None),
        policy=_section(conf, "policy", PolicyConf.parse, PolicyConf()),
        container_settings=_section(conf, "container_settings", ContainerSettings.parse, ContainerSettings()),
        dns=_section(conf, "dns", DNSConf.parse, None),
        prev_result=_get(conf, "prevResult", dict, "prevResult"),
        runtime_config=_get(conf, "runtimeConfig", dict, "runtimeConfig", {}),
        args=_get(conf, "args", dict, "args", {}),
        **strings,
    )
