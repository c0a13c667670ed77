"""Policy resources: NetworkPolicy, GlobalNetworkPolicy, Profile, Tier,
NetworkSet, GlobalNetworkSet, and the shared Rule / EntityRule / ICMPFields
types.

Upstream defaulting applied on load: policy ``tier`` "default"; ``types``
[Ingress] when there are no egress rules, [Egress] when there are only egress
rules, both when both; Tier ``defaultAction`` Deny (Pass for the built-in
``kube-admin`` / ``kube-baseline`` tiers).  Rules always carry ``source`` and
``destination`` (``{}`` when empty), as upstream's Go serialisation does.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from datastore.models.common import (
    CIDR,
    Annotations,
    CalicoModel,
    Labels,
    Name,
    Net,
    ObjectMeta,
    Order,
    Port,
    Protocol,
    Resource,
    Selector,
    check_no_global,
    info_get,
    json_name,
    parse_cidr_or_ip,
    protocol_supports_ports,
)

Action = Literal["Allow", "Deny", "Log", "Pass"]
PolicyType = Literal["Ingress", "Egress"]
PerformanceHint = Literal["AssumeNeededOnEveryNode"]

MAX_RULES = 1024  # per direction


class ICMPFields(CalicoModel):
    type: Optional[int] = Field(None, ge=0, le=254)
    code: Optional[int] = Field(None, ge=0, le=255)

    @field_validator("code")
    @classmethod
    def _code(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is not None and info_get(info, "type") is None:
            raise ValueError("ICMP code specified without an ICMP type")
        return v


class ServiceAccountMatch(CalicoModel):
    names: Optional[list[str]] = None
    selector: Optional[Selector] = None


class ServiceMatch(CalicoModel):
    name: Optional[Name] = None
    namespace: Optional[Name] = None


class HTTPPath(CalicoModel):
    exact: Optional[str] = None
    prefix: Optional[str] = Field(None, validate_default=True)

    @field_validator("prefix")
    @classmethod
    def _one_of(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        exact = info_get(info, "exact")
        if exact and v:
            raise ValueError("invalid path match: both 'exact' and 'prefix' are set")
        path = exact or v
        if not path:
            raise ValueError("invalid path match: either 'exact' or 'prefix' must be set")
        if not path.startswith("/") or any(c in path for c in "? #"):
            raise ValueError(f"invalid path {path!r}: must start with '/' and not contain '?', ' ' or '#'")
        return v


class HTTPMatch(CalicoModel):
    methods: Optional[list[str]] = None
    paths: Optional[list[HTTPPath]] = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v and len(set(v)) != len(v):
            raise ValueError(f"invalid methods (duplicates): {v}")
        return v


class RuleMetadata(CalicoModel):
    annotations: Optional[Annotations] = None


def _nets_versions(nets: Optional[list[str]]) -> set[int]:
    return {parse_cidr_or_ip(n)[0].version for n in nets or ()}


class EntityRule(CalicoModel):
    nets: Optional[list[Net]] = None
    selector: Optional[Selector] = None
    namespace_selector: Optional[Selector] = Field(None, alias="namespaceSelector")
    services: Optional[ServiceMatch] = None
    ports: Optional[list[Port]] = None
    not_nets: Optional[list[Net]] = Field(None, alias="notNets")
    not_selector: Optional[Selector] = Field(None, alias="notSelector")
    not_ports: Optional[list[Port]] = Field(None, alias="notPorts")
    service_accounts: Optional[ServiceAccountMatch] = Field(None, alias="serviceAccounts")

    @field_validator("selector", "not_selector")
    @classmethod
    def _no_global(cls, v: Optional[str]) -> Optional[str]:
        return check_no_global(v)

    @field_validator("namespace_selector")
    @classmethod
    def _ns_global(cls, v: Optional[str]) -> Optional[str]:
        if v and "global()" in v and v.strip() != "global()":
            raise ValueError("global() cannot be combined with other selectors")
        return v

    @field_validator("services")
    @classmethod
    def _services(cls, v: Optional[ServiceMatch], info: ValidationInfo) -> Optional[ServiceMatch]:
        if v is None:
            return v
        if not v.name:
            raise ValueError("services must specify a service name")
        for field, label in (
            ("namespace_selector", "namespaceSelector"),
            ("selector", "selector"),
            ("nets", "nets"),
        ):
            if info_get(info, field):
                raise ValueError(f"cannot specify {label} and services on the same rule")
        return v

    @field_validator("not_nets", "not_selector", "service_accounts")
    @classmethod
    def _not_with_services(cls, v: Any, info: ValidationInfo) -> Any:
        if v and info_get(info, "services") is not None:
            raise ValueError(f"cannot specify {json_name(cls, info.field_name)} and services on the same rule")
        return v

    def has_ports(self) -> bool:
        return bool(self.ports or self.not_ports)


class Rule(CalicoModel):
    action: Action
    ip_version: Optional[Literal[4, 6]] = Field(None, alias="ipVersion")
    protocol: Optional[Protocol] = None
    icmp: Optional[ICMPFields] = None
    not_protocol: Optional[Protocol] = Field(None, alias="notProtocol")
    not_icmp: Optional[ICMPFields] = Field(None, alias="notICMP")
    source: EntityRule = Field(default_factory=EntityRule, validate_default=True)
    destination: EntityRule = Field(default_factory=EntityRule, validate_default=True)
    http: Optional[HTTPMatch] = None
    metadata: Optional[RuleMetadata] = None

    @field_validator("protocol", "not_protocol")
    @classmethod
    def _icmp_version(cls, v: Any, info: ValidationInfo) -> Any:
        ipv = info_get(info, "ip_version")
        if v == "ICMP" and ipv not in (None, 4):
            raise ValueError("protocol ICMP requires ipVersion 4")
        if v == "ICMPv6" and ipv not in (None, 6):
            raise ValueError("protocol ICMPv6 requires ipVersion 6")
        return v

    @field_validator("icmp")
    @classmethod
    def _icmp(cls, v: Optional[ICMPFields], info: ValidationInfo) -> Optional[ICMPFields]:
        if v is not None and info_get(info, "protocol") not in ("ICMP", "ICMPv6"):
            raise ValueError("rules that specify ICMP fields must set protocol to ICMP or ICMPv6")
        return v

    @field_validator("source", "destination")
    @classmethod
    def _entity(cls, v: EntityRule, info: ValidationInfo) -> EntityRule:
        side = info.field_name
        if v.has_ports() and not protocol_supports_ports(info_get(info, "protocol")):
            raise ValueError(f"{side} ports require the rule's protocol to be TCP, UDP or SCTP")
        if side == "destination" and v.services is not None and v.has_ports():
            raise ValueError("cannot specify ports with a service selector")
        versions = _nets_versions(v.nets) | _nets_versions(v.not_nets)
        if side == "destination":
            src = info_get(info, "source")
            if src is not None:
                versions |= _nets_versions(src.nets) | _nets_versions(src.not_nets)
        if len(versions) > 1:
            raise ValueError("rule contains both IPv4 and IPv6 CIDRs")
        ipv = info_get(info, "ip_version")
        if ipv is not None and versions and versions != {ipv}:
            raise ValueError(f"{side} nets do not match the rule's ipVersion {ipv}")
        return v

    @field_validator("http")
    @classmethod
    def _http(cls, v: Optional[HTTPMatch], info: ValidationInfo) -> Optional[HTTPMatch]:
        if v is None:
            return v
        if info_get(info, "protocol") not in (None, "TCP", 6):
            raise ValueError("rules that specify HTTP fields must set protocol to TCP or leave it empty")
        if info_get(info, "action") != "Allow":
            raise ValueError("HTTP match is only valid for Allow rules")
        return v


def _check_rules(rules: Optional[list[Rule]], direction: str) -> Optional[list[Rule]]:
    if not rules:
        return rules
    if len(rules) > MAX_RULES:
        raise ValueError(f"too many {direction} rules ({len(rules)} > {MAX_RULES})")
    for i, r in enumerate(rules):
        if direction == "egress":
            if r.source.services is not None:
                raise ValueError(f"rule {i}: services are not allowed in an egress rule source")
            if r.http is not None:
                raise ValueError(f"rule {i}: HTTP match is not allowed in egress rules")
        elif r.destination.services is not None:
            raise ValueError(f"rule {i}: services are not allowed in an ingress rule destination")
    return rules


def default_types(ingress: Optional[list[Rule]], egress: Optional[list[Rule]]) -> list[str]:
    """Upstream's defaulting of an empty ``types`` field."""
    if not egress:
        return ["Ingress"]
    if not ingress:
        return ["Egress"]
    return ["Ingress", "Egress"]


class _PolicySpecBase(CalicoModel):
    tier: Name = "default"
    order: Optional[Order] = None
    ingress: Optional[list[Rule]] = None
    egress: Optional[list[Rule]] = None
    selector: Optional[Selector] = None
    types: Optional[list[PolicyType]] = Field(None, validate_default=True)
    service_account_selector: Optional[Selector] = Field(None, alias="serviceAccountSelector")
    performance_hints: Optional[list[PerformanceHint]] = Field(None, alias="performanceHints")

    @field_validator("ingress")
    @classmethod
    def _ingress(cls, v: Optional[list[Rule]]) -> Optional[list[Rule]]:
        return _check_rules(v, "ingress")

    @field_validator("egress")
    @classmethod
    def _egress(cls, v: Optional[list[Rule]]) -> Optional[list[Rule]]:
        return _check_rules(v, "egress")

    @field_validator("selector", "service_account_selector")
    @classmethod
    def _no_global(cls, v: Optional[str]) -> Optional[str]:
        return check_no_global(v)

    @field_validator("types")
    @classmethod
    def _types(cls, v: Optional[list[str]], info: ValidationInfo) -> list[str]:
        if not v:
            return default_types(info_get(info, "ingress"), info_get(info, "egress"))
        for t in v:
            if v.count(t) > 1:
                raise ValueError(f"{t!r} type specified more than once")
        return v

    @field_validator("performance_hints")
    @classmethod
    def _hints(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v and len(set(v)) != len(v):
            raise ValueError("performanceHints contains duplicates")
        return v


class NetworkPolicySpec(_PolicySpecBase):
    pass


class GlobalNetworkPolicySpec(_PolicySpecBase):
    namespace_selector: Optional[Selector] = Field(None, alias="namespaceSelector")
    do_not_track: Optional[bool] = Field(None, alias="doNotTrack")
    pre_dnat: Optional[bool] = Field(None, alias="preDNAT")
    apply_on_forward: Optional[bool] = Field(None, alias="applyOnForward", validate_default=True)

    @field_validator("namespace_selector")
    @classmethod
    def _ns_no_global(cls, v: Optional[str]) -> Optional[str]:
        return check_no_global(v)

    @field_validator("pre_dnat")
    @classmethod
    def _pre_dnat(cls, v: Optional[bool], info: ValidationInfo) -> Optional[bool]:
        if not v:
            return v
        if info_get(info, "do_not_track"):
            raise ValueError("preDNAT and doNotTrack cannot both be true")
        if info_get(info, "egress"):
            raise ValueError("a preDNAT policy cannot have egress rules")
        if "Egress" in (info_get(info, "types") or ()):
            raise ValueError("a preDNAT policy cannot have the Egress type")
        return v

    @field_validator("apply_on_forward")
    @classmethod
    def _aof(cls, v: Optional[bool], info: ValidationInfo) -> Optional[bool]:
        if not v and (info_get(info, "do_not_track") or info_get(info, "pre_dnat")):
            raise ValueError("applyOnForward must be true if either preDNAT or doNotTrack is true")
        return v

    @field_validator("ingress", "egress")
    @classmethod
    def _service_namespaces(cls, v: Optional[list[Rule]], info: ValidationInfo) -> Optional[list[Rule]]:
        # Global policy: a service match needs an explicit namespace.
        for i, r in enumerate(v or ()):
            for side in (r.source, r.destination):
                if side.services is not None and not side.services.namespace:
                    raise ValueError(f"rule {i}: services must specify a namespace in a global policy")
        return v


class NetworkPolicy(Resource):
    KIND: ClassVar[str] = "NetworkPolicy"
    NAMESPACED: ClassVar[bool] = True

    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class GlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    NAMESPACED: ClassVar[bool] = False

    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)


class ProfileSpec(CalicoModel):
    ingress: Optional[list[Rule]] = None
    egress: Optional[list[Rule]] = None
    labels_to_apply: Optional[Labels] = Field(None, alias="labelsToApply")

    @field_validator("ingress")
    @classmethod
    def _ingress(cls, v: Optional[list[Rule]]) -> Optional[list[Rule]]:
        return _check_rules(v, "ingress")

    @field_validator("egress")
    @classmethod
    def _egress(cls, v: Optional[list[Rule]]) -> Optional[list[Rule]]:
        return _check_rules(v, "egress")


class Profile(Resource):
    KIND: ClassVar[str] = "Profile"
    NAMESPACED: ClassVar[bool] = False

    spec: ProfileSpec = Field(default_factory=ProfileSpec)


BUILTIN_TIER_ACTIONS = {"default": "Deny", "kube-admin": "Pass", "kube-baseline": "Pass"}


class TierSpec(CalicoModel):
    order: Optional[Order] = None
    default_action: Optional[Literal["Deny", "Pass"]] = Field(None, alias="defaultAction")


class Tier(Resource):
    KIND: ClassVar[str] = "Tier"
    NAMESPACED: ClassVar[bool] = False

    # validate_default: a Tier without a spec gets its defaultAction like one with ``spec: {}``.
    spec: TierSpec = Field(default_factory=TierSpec, validate_default=True)

    @field_validator("spec")
    @classmethod
    def _default_action(cls, spec: TierSpec, info: ValidationInfo) -> TierSpec:
        meta = info_get(info, "metadata")
        name = meta.name if meta is not None else ""
        required = BUILTIN_TIER_ACTIONS.get(name)
        if spec.default_action is None:
            spec.default_action = "Pass" if required == "Pass" else "Deny"
        elif required and spec.default_action != required:
            raise ValueError(f"defaultAction of the {name!r} tier must be {required!r}")
        return spec


def _reject_namespace_label(m: ObjectMeta) -> None:
    if m.labels and "projectcalico.org/namespace" in m.labels:
        raise ValueError("projectcalico.org/namespace is not a valid label name for network sets")


class NetworkSetSpec(CalicoModel):
    nets: Optional[list[CIDR]] = None


class NetworkSet(Resource):
    KIND: ClassVar[str] = "NetworkSet"
    NAMESPACED: ClassVar[bool] = True

    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)

    @classmethod
    def check_metadata(cls, m: ObjectMeta) -> None:
        _reject_namespace_label(m)


class GlobalNetworkSetSpec(CalicoModel):
    nets: Optional[list[CIDR]] = None


class GlobalNetworkSet(Resource):
    KIND: ClassVar[str] = "GlobalNetworkSet"
    NAMESPACED: ClassVar[bool] = False

    spec: GlobalNetworkSetSpec = Field(default_factory=GlobalNetworkSetSpec)

    @classmethod
    def check_metadata(cls, m: ObjectMeta) -> None:
        _reject_namespace_label(m)
