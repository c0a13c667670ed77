"""Schemas of what plugins print (SPEC.md section 5, "Result Types"), per protocol version.

The models are deliberately strict: JSON types must match exactly and keys the version does not
define are reported, so a 1.0.0 result carrying the removed ips[].version, or a 0.4.0 result with
1.1-only fields, is caught.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from conformance.spec import at_least, vtuple

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5,19}$")
_UInt = Field(default=None, ge=0)


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} is not in CIDR notation")
    ipaddress.ip_interface(value)
    return value


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Interface(_Strict):
    name: str = Field(min_length=1)
    mac: str | None = None
    sandbox: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v not in (None, "") and not _MAC.match(v):
            raise ValueError(f"{v!r} is not a hardware address")
        return v


class Interface11(Interface):
    mtu: int | None = _UInt
    socketPath: str | None = None
    pciID: str | None = None


class IPConfig(_Strict):
    address: str
    gateway: str | None = None
    interface: int | None = _UInt

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _cidr(v)

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str | None) -> str | None:
        return v if v is None else _ip(v)


class IPConfig03(IPConfig):
    version: Literal["4", "6"]

    @model_validator(mode="after")
    def _family(self) -> "IPConfig03":
        actual = str(ipaddress.ip_interface(self.address).version)
        if actual != self.version:
            raise ValueError(f"version {self.version!r} does not match address {self.address}")
        return self


class Route(_Strict):
    dst: str
    gw: str | None = None

    @field_validator("dst")
    @classmethod
    def _dst(cls, v: str) -> str:
        return _cidr(v)

    @field_validator("gw")
    @classmethod
    def _gw(cls, v: str | None) -> str | None:
        return v if v is None else _ip(v)


class Route11(Route):
    mtu: int | None = _UInt
    advmss: int | None = _UInt
    priority: int | None = _UInt
    table: int | None = _UInt
    scope: int | None = _UInt


class DNS(_Strict):
    nameservers: list[str] | None = None
    domain: str | None = None
    search: list[str] | None = None
    options: list[str] | None = None

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, v: list[str] | None) -> list[str] | None:
        for s in v or []:
            _ip(s)
        return v


class Result03(_Strict):
    """0.3.0, 0.3.1 and 0.4.0."""

    cniVersion: str
    interfaces: list[Interface] | None = None
    ips: list[IPConfig03] | None = None
    routes: list[Route] | None = None
    dns: DNS | None = None


class Result10(Result03):
    ips: list[IPConfig] | None = None  # type: ignore[assignment]


class Result11(Result10):
    interfaces: list[Interface11] | None = None  # type: ignore[assignment]
    routes: list[Route11] | None = None  # type: ignore[assignment]


def result_model(version: str) -> type[Result03]:
    if at_least(version, "1.1.0"):
        return Result11
    if at_least(version, "1.0.0"):
        return Result10
    return Result03


def _pydantic_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<result>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "key not defined for this version"
        out.append(f"{loc}: {msg}")
    return out


def add_result_problems(result: Any, version: str, ifname: str, netns_path: str) -> list[str]:
    """Everything wrong with an ADD result for `version` (empty list = conformant).

    Beyond the schema: cniVersion echoes the request, ips[].interface indexes exist, and the
    container interface CNI_IFNAME is listed with sandbox == CNI_NETNS and carries an address.
    """
    if not isinstance(result, dict):
        return [f"result is {type(result).__name__}, not a JSON object"]
    problems: list[str] = []
    try:
        model = result_model(version).model_validate(result)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        model = None
    if result.get("cniVersion") != version:
        problems.append(f"cniVersion is {result.get('cniVersion')!r}, expected the requested {version!r}")
    if model is None:
        return problems
    interfaces = model.interfaces or []
    for i, ip in enumerate(model.ips or []):
        if ip.interface is not None and ip.interface >= len(interfaces):
            problems.append(f"ips.{i}.interface: index {ip.interface} but only {len(interfaces)} interfaces")
    container = [i for i, itf in enumerate(interfaces) if itf.name == ifname and itf.sandbox]
    if not container:
        problems.append(f"no interface named CNI_IFNAME={ifname!r} with a sandbox in interfaces")
    else:
        idx = container[0]
        if interfaces[idx].sandbox != netns_path:
            problems.append(f"interfaces.{idx}.sandbox is {interfaces[idx].sandbox!r}, expected CNI_NETNS {netns_path!r}")
        if not any(ip.interface == idx for ip in model.ips or []):
            problems.append(f"no ips entry has interface index {idx} ({ifname})")
    return problems


def container_addresses(result: dict[str, Any], ifname: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Addresses the result assigns to the container interface CNI_IFNAME."""
    interfaces = result.get("interfaces") or []
    idx = {i for i, itf in enumerate(interfaces) if isinstance(itf, dict) and itf.get("name") == ifname and itf.get("sandbox")}
    out = []
    for ip in result.get("ips") or []:
        if isinstance(ip, dict) and ip.get("interface") in idx and isinstance(ip.get("address"), str):
            try:
                out.append(ipaddress.ip_interface(ip["address"]))
            except ValueError:
                pass
    return out


def error_problems(obj: Any) -> list[str]:
    """SPEC.md section 5 "Error": cniVersion, code, msg, details (details/cniVersion optional)."""
    if not isinstance(obj, dict):
        return [f"error output is {type(obj).__name__}, not a JSON object"]
    problems = []
    code = obj.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        problems.append(f"code is {code!r}, not an integer")
    elif code < 1:
        problems.append(f"code {code} is not an error code")
    if not isinstance(obj.get("msg"), str) or not obj.get("msg"):
        problems.append(f"msg is {obj.get('msg')!r}, not a non-empty string")
    if "details" in obj and not isinstance(obj["details"], str):
        problems.append(f"details is {obj['details']!r}, not a string")
    if "cniVersion" in obj and not isinstance(obj["cniVersion"], str):
        problems.append(f"cniVersion is {obj['cniVersion']!r}, not a string")
    return problems


def version_problems(obj: Any, requested: str, tested: list[str]) -> list[str]:
    """SPEC.md section 5 "VERSION Success"."""
    if not isinstance(obj, dict):
        return [f"VERSION output is {type(obj).__name__}, not a JSON object"]
    problems = []
    if obj.get("cniVersion") != requested:
        problems.append(f"cniVersion is {obj.get('cniVersion')!r}, expected the requested {requested!r}")
    supported = obj.get("supportedVersions")
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        problems.append(f"supportedVersions is {supported!r}, not a list of strings")
        return problems
    for v in supported:
        try:
            vtuple(v)
        except ValueError:
            problems.append(f"supportedVersions entry {v!r} is not a version")
    missing = [v for v in tested if v not in supported]
    if missing:
        problems.append(f"supportedVersions {supported} lacks tested version(s) {missing}")
    return problems
