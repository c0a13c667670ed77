"""The ``calico`` / ``calico-ipam`` network config (upstream's field names).

Unknown fields are ignored; a known field of the wrong type is CNI error 7
naming the field.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cni.errors import INVALID_NETWORK_CONFIG, CNIError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class IPAMConf(_Lenient):
    type: str
    assign_ipv4: str | bool | None = None
    assign_ipv6: str | bool | None = None
    ipv4_pools: list[str] = Field(default_factory=list)
    ipv6_pools: list[str] = Field(default_factory=list)

    @field_validator("assign_ipv4", "assign_ipv6")
    @classmethod
    def _bool_string(cls, v: str | bool | None) -> str | bool | None:
        if isinstance(v, str) and v.lower() not in ("true", "false"):
            raise ValueError('must be "true" or "false"')
        return v

    def wants_ipv4(self) -> bool:
        return _truthy(self.assign_ipv4, default=True)

    def wants_ipv6(self) -> bool:
        return _truthy(self.assign_ipv6, default=False)


def _truthy(value: str | bool | None, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return value.lower() == "true"


class KubernetesConf(_Lenient):
    kubeconfig: str | None = None
    k8s_api_root: str | None = None


class PolicyConf(_Lenient):
    type: str | None = None


class ContainerSettings(_Lenient):
    allow_ip_forwarding: bool = False


class DNSConf(_Lenient):
    nameservers: list[str] = Field(default_factory=list)
    domain: str | None = None
    search: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)


class NetConf(_Lenient):
    cni_version: str = Field("0.2.0", alias="cniVersion")
    name: str
    type: str
    datastore_type: Literal["etcdv3", "kubernetes"] | None = None
    etcd_endpoints: str | None = None
    etcd_key_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_ca_cert_file: str | None = None
    kubernetes: KubernetesConf = Field(default_factory=KubernetesConf)
    nodename: str | None = None
    nodename_file: str | None = None
    nodename_file_optional: bool = True
    mtu: int = Field(1500, ge=68, le=65535)
    ipam: IPAMConf | None = None
    log_level: str = "info"
    log_file_path: str = "/var/log/calico/cni/cni.log"
    policy: PolicyConf = Field(default_factory=PolicyConf)
    container_settings: ContainerSettings = Field(default_factory=ContainerSettings)
    dns: DNSConf | None = None
    ipam_lock_file: str = "/var/run/calico/ipam.lock"
    prev_result: dict[str, Any] | None = Field(None, alias="prevResult")
    runtime_config: dict[str, Any] = Field(default_factory=dict, alias="runtimeConfig")
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("mtu", mode="before")
    @classmethod
    def _mtu_zero_is_default(cls, v: Any) -> Any:
        # Upstream: 0 means "take /var/lib/calico/mtu or the default".
        return 1500 if v == 0 else v


def parse_netconf(conf: dict[str, Any]) -> NetConf:
    try:
        return NetConf.model_validate(conf)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f"invalid network config field {field!r}: {first['msg']}",
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            ),
        ) from None
