"""Shared pieces of the projectcalico.org/v3 models: metadata, the resource base
class and the validated scalar types (names, IPs, CIDRs, ports, protocols,
AS numbers, selectors, durations).

Field names on the wire are Calico's camelCase JSON names; Python attributes
are snake_case with those names as aliases.  Models dump with
``by_alias=True, exclude_none=True`` (see :meth:`Resource.dump`).
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from typing import Annotated, Any, ClassVar, Optional, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
)

API_VERSION = "projectcalico.org/v3"

# --------------------------------------------------------------------------
# Plain checks (usable outside pydantic too).  Each raises ValueError.
# --------------------------------------------------------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_DNS_LABEL_RE = re.compile(rf"^{_LABEL}$")
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_IFACE_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAMED_PORT_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_PORT_RANGE_RE = re.compile(r"^(\d+):(\d+)$")
_DURATION_RE = re.compile(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}((\1[0-9a-fA-F]{2}){2})?$")

MAX_NAME_LEN = 253
PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_PROTOCOL_BY_LOWER = {p.lower(): p for p in PROTOCOL_NAMES}
_PORT_PROTOCOLS = frozenset({6, 17, 132, "TCP", "UDP", "SCTP"})


def check_name(v: str) -> str:
    """A resource name: DNS-1123 subdomain (lower-case alphanumerics, '-', '.'),
    at most 253 characters.  Workload endpoint names (``node--1-k8s-pod-eth0``)
    fit this format, doubled dashes included."""
    if len(v) > MAX_NAME_LEN:
        raise ValueError(f"name is too long by {len(v) - MAX_NAME_LEN} characters (max {MAX_NAME_LEN})")
    if not _NAME_RE.match(v):
        raise ValueError(
            f"invalid name {v!r}: must consist of lower case alphanumeric characters, '-' or '.', "
            "and start and end with an alphanumeric character"
        )
    return v


def check_dns_label(v: str, max_len: int = 63) -> str:
    if len(v) > max_len or not _DNS_LABEL_RE.match(v):
        raise ValueError(f"invalid name {v!r}: must be a DNS-1123 label (max {max_len} characters)")
    return v


def check_container_id(v: str) -> str:
    if not _CONTAINER_ID_RE.match(v):
        raise ValueError(f"invalid container ID {v!r}")
    return v


def check_interface(v: str, allow_star: bool = False) -> str:
    if allow_star and v == "*":
        return v
    if not _IFACE_RE.match(v):
        raise ValueError(f"invalid interface name {v!r}: 1-15 characters from [a-zA-Z0-9_.-]")
    return v


def _qualified_name_problem(key: str) -> Optional[str]:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > MAX_NAME_LEN or not _NAME_RE.match(prefix):
            return f"prefix of {key!r} must be a DNS-1123 subdomain"
    else:
        name = key
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        return (
            f"{key!r}: name part must be 1-63 characters of alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def check_labels(v: dict[str, str]) -> dict[str, str]:
    for k, val in v.items():
        problem = _qualified_name_problem(k)
        if problem:
            raise ValueError(f"invalid label key {problem}")
        if len(val) > 63 or not _LABEL_VALUE_RE.match(val):
            raise ValueError(
                f"invalid value {val!r} for label {k!r}: at most 63 alphanumerics, '-', '_' or '.', "
                "starting and ending with an alphanumeric"
            )
    return v


def check_annotations(v: dict[str, str]) -> dict[str, str]:
    total = 0
    for k, val in v.items():
        problem = _qualified_name_problem(k.lower())
        if problem:
            raise ValueError(f"invalid annotation key {problem}")
        total += len(k) + len(val)
    if total > 256 * 1024:
        raise ValueError(f"total size of annotations is too large by {total - 256 * 1024} bytes")
    return v


IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_ip(v: str) -> IPAddress:
    if "%" in v:
        raise ValueError(f"invalid IP address {v!r}")
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"invalid IP address {v!r}") from None


def parse_cidr_or_ip(v: str) -> tuple[IPAddress, IPNetwork]:
    """Parse ``a.b.c.d/n`` or a bare IP (full mask); returns (address, masked network)."""
    addr_s, slash, plen = v.partition("/")
    addr = parse_ip(addr_s)
    if slash and not (plen.isdigit() and int(plen) <= addr.max_prefixlen):
        raise ValueError(f"invalid CIDR {v!r}")
    net = ipaddress.ip_network(f"{addr}/{plen if slash else addr.max_prefixlen}", strict=False)
    return addr, net


def check_ip(v: str, version: Optional[int] = None) -> str:
    ip = parse_ip(v)
    if version and ip.version != version:
        raise ValueError(f"{v!r} is not an IPv{version} address")
    return v


def check_cidr(v: str, version: Optional[int] = None) -> str:
    """A CIDR or bare IP; host bits may be set (upstream ``cidr``)."""
    addr, _ = parse_cidr_or_ip(v)
    if version and addr.version != version:
        raise ValueError(f"{v!r} is not an IPv{version} CIDR")
    return v


def check_net(v: str) -> str:
    """A strictly masked CIDR or a bare IP (upstream ``net``)."""
    addr, net = parse_cidr_or_ip(v)
    if net.network_address != addr:
        raise ValueError(f"CIDR {v!r} is not strictly masked (did you mean {net}?)")
    return v


def check_mac(v: str) -> str:
    if not _MAC_RE.match(v):
        raise ValueError(f"invalid MAC address {v!r}")
    return v


def check_duration(v: str) -> str:
    if v and not _DURATION_RE.match(v):
        raise ValueError(f"invalid duration {v!r} (expected e.g. '90s', '1m30s', '500ms')")
    return v


def check_port_name(v: str) -> str:
    """A Kubernetes port name (IANA service name): 1-15 of [a-z0-9-], at least one
    letter, no leading, trailing or doubled '-'."""
    if (
        not 1 <= len(v) <= 15
        or not re.fullmatch(r"[a-z0-9-]+", v)
        or not re.search(r"[a-z]", v)
        or v.startswith("-")
        or v.endswith("-")
        or "--" in v
    ):
        raise ValueError(f"invalid port name {v!r}")
    return v


def check_selector(v: str) -> str:
    """Validate a selector with :mod:`datastore.selector`; the text is kept as given."""
    from datastore.selector import SelectorError, validate_selector

    try:
        validate_selector(v)
    except SelectorError as e:  # its message names the position and the text
        raise ValueError(str(e)) from None
    return v


def check_no_global(v: Optional[str]) -> Optional[str]:
    if v and "global()" in v:
        raise ValueError("global() can only be used in an EntityRule namespaceSelector")
    return v


def parse_port(v: Any) -> Union[int, str]:
    """A port: 80, "80", "1000:2000" or a named port.  Single ports (and
    ranges with min == max) normalise to an int, as upstream serialises them."""
    if isinstance(v, bool):
        raise ValueError(f"invalid port {v!r}")
    if isinstance(v, int):
        if not 1 <= v <= 65535:
            raise ValueError(f"port {v} out of range 1-65535")
        return v
    if not isinstance(v, str):
        raise ValueError(f"invalid port {v!r}: expected a number, 'min:max' or a port name")
    if v.isdigit():
        n = int(v)
        if not 1 <= n <= 65535:
            raise ValueError(f"port {v!r} out of range 1-65535")
        return n
    m = _PORT_RANGE_RE.match(v)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise ValueError(f"port range {v!r} out of range 1-65535")
        if lo > hi:
            raise ValueError(f"port range {v!r}: minimum is greater than maximum")
        return lo if lo == hi else f"{lo}:{hi}"
    if not _NAMED_PORT_RE.match(v):
        raise ValueError(f"invalid port {v!r}: expected a number, 'min:max' or a port name")
    return v


def parse_protocol(v: Any) -> Union[int, str]:
    """A protocol: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite (any case, normalised)
    or a number 1-255 (numeric strings become ints, as upstream)."""
    if isinstance(v, bool):
        raise ValueError(f"invalid protocol {v!r}")
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, int):
        if not 1 <= v <= 255:
            raise ValueError(f"protocol number {v} out of range 1-255")
        return v
    if isinstance(v, str) and v.lower() in _PROTOCOL_BY_LOWER:
        return _PROTOCOL_BY_LOWER[v.lower()]
    raise ValueError(f"invalid protocol {v!r}: must be one of {', '.join(PROTOCOL_NAMES)} or a number 1-255")


def protocol_supports_ports(p: Union[int, str, None]) -> bool:
    return p in _PORT_PROTOCOLS


def parse_asn(v: Any) -> int:
    """An AS number 1-4294967295, as a number, numeric string or dotted "a.b"."""
    if isinstance(v, bool):
        raise ValueError(f"invalid AS number {v!r}")
    if isinstance(v, str):
        s = v.strip()
        if s.isdigit():
            v = int(s)
        else:
            hi, dot, lo = s.partition(".")
            if not (dot and hi.isdigit() and lo.isdigit() and int(hi) <= 65535 and int(lo) <= 65535):
                raise ValueError(f"invalid AS number {v!r}: expected 1-4294967295 or dotted 'a.b'")
            v = (int(hi) << 16) + int(lo)
    if not isinstance(v, int) or not 1 <= v <= 4294967295:
        raise ValueError(f"invalid AS number {v!r}: must be 1-4294967295")
    return v


def _rfc3339(v: Any) -> Any:
    """YAML loaders may turn timestamps into datetimes; store them as RFC 3339 text."""
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat(timespec="seconds") + "Z"
    return v


def _int_if_integral(v: float) -> Union[int, float]:
    return int(v) if float(v).is_integer() else v


# --------------------------------------------------------------------------
# Annotated types.
# --------------------------------------------------------------------------

Name = Annotated[str, AfterValidator(check_name)]
ContainerID = Annotated[str, AfterValidator(check_container_id)]
IPAddr = Annotated[str, AfterValidator(check_ip)]
IPv4Addr = Annotated[str, AfterValidator(lambda v: check_ip(v, 4))]
IPv6Addr = Annotated[str, AfterValidator(lambda v: check_ip(v, 6))]
CIDR = Annotated[str, AfterValidator(check_cidr)]
CIDRv4 = Annotated[str, AfterValidator(lambda v: check_cidr(v, 4))]
CIDRv6 = Annotated[str, AfterValidator(lambda v: check_cidr(v, 6))]
Net = Annotated[str, AfterValidator(check_net)]
MAC = Annotated[str, AfterValidator(check_mac)]
Duration = Annotated[str, AfterValidator(check_duration)]
PortName = Annotated[str, AfterValidator(check_port_name)]
Selector = Annotated[str, AfterValidator(check_selector)]
Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
Annotations = Annotated[dict[str, str], AfterValidator(check_annotations)]
Port = Annotated[Union[int, str], PlainValidator(parse_port)]
Protocol = Annotated[Union[int, str], PlainValidator(parse_protocol)]
ASNumber = Annotated[int, PlainValidator(parse_asn)]
Timestamp = Annotated[str, BeforeValidator(_rfc3339)]
# Go float64: integral values print without a fractional part.
Order = Annotated[float, PlainSerializer(_int_if_integral)]
Uint16 = Annotated[int, Field(ge=0, le=65535)]
Uint32 = Annotated[int, Field(ge=0, le=4294967295)]


# --------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------


class CalicoModel(BaseModel):
    """Base of spec structures: aliases on the wire, unknown fields rejected."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class ObjectMeta(BaseModel):
    """Kubernetes-style object metadata.  Unknown metadata fields are kept, so
    whatever the API server or etcd adds round-trips unchanged."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    name: Name
    namespace: Optional[str] = None
    generate_name: Optional[str] = Field(None, alias="generateName")
    uid: Optional[str] = None
    resource_version: Optional[str] = Field(None, alias="resourceVersion")
    generation: Optional[int] = None
    creation_timestamp: Optional[Timestamp] = Field(None, alias="creationTimestamp")
    deletion_timestamp: Optional[Timestamp] = Field(None, alias="deletionTimestamp")
    deletion_grace_period_seconds: Optional[int] = Field(None, alias="deletionGracePeriodSeconds")
    labels: Optional[Labels] = None
    annotations: Optional[Annotations] = None
    owner_references: Optional[list[dict[str, Any]]] = Field(None, alias="ownerReferences")
    finalizers: Optional[list[str]] = None
    managed_fields: Optional[list[dict[str, Any]]] = Field(None, alias="managedFields")
    self_link: Optional[str] = Field(None, alias="selfLink")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: Optional[str]) -> Optional[str]:
        if v:
            check_dns_label(v)
        return v

    @field_validator("resource_version", mode="before")
    @classmethod
    def _rv(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Resource(BaseModel):
    """A projectcalico.org/v3 resource: ``apiVersion``, ``kind``, ``metadata``, ``spec``.

    Subclasses set ``KIND`` and ``NAMESPACED`` and declare ``spec``.  For
    namespaced kinds a missing namespace defaults to ``default`` (as calicoctl
    does); cluster-scoped kinds reject one.
    """

    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: str = Field(API_VERSION, alias="apiVersion", validate_default=True)
    kind: str = Field("", validate_default=True)
    metadata: ObjectMeta

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, v: str) -> str:
        if v != API_VERSION:
            raise ValueError(f"apiVersion must be {API_VERSION!r}, not {v!r}")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if not v:
            return cls.KIND
        if v != cls.KIND:
            raise ValueError(f"kind must be {cls.KIND!r}, not {v!r}")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, m: ObjectMeta) -> ObjectMeta:
        if cls.NAMESPACED:
            if not m.namespace:
                m.namespace = "default"
        elif m.namespace:
            raise ValueError(f"metadata.namespace must not be set: {cls.KIND} is cluster-scoped")
        cls.check_metadata(m)
        return m

    @classmethod
    def check_metadata(cls, m: ObjectMeta) -> None:
        """Kind-specific metadata checks; raise ValueError to reject."""

    def dump(self) -> dict[str, Any]:
        """The resource as Calico JSON (camelCase, unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> Optional[str]:
        return self.metadata.namespace


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes inside an annotation (through Optional, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def error_path(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a dotted path of JSON names, e.g.
    ``spec.ingress[0].destination.ports[1]``.  (pydantic reports the Python
    name for fields that were absent and failed default validation.)"""
    out = ""
    candidates: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part)
        nxt: list[type[BaseModel]] = []
        for cls in candidates:
            fields = cls.model_fields
            field = fields.get(name) or next((f for f in fields.values() if f.alias == name), None)
            if field is not None:
                name = field.alias or name
                nxt = _models_in(field.annotation)
                break
        candidates = nxt
        out += ("." if out else "") + name
    return out or "(document)"


def json_name(model: type[BaseModel], field_name: str) -> str:
    """The JSON (alias) name of a model field."""
    field = model.model_fields.get(field_name)
    return (field.alias or field_name) if field is not None else field_name


def info_get(info: ValidationInfo, name: str, default: Any = None) -> Any:
    """A previously validated sibling field (absent if it failed validation)."""
    return info.data.get(name, default)
