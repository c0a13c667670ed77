"""Policy, profile and rule conversion: datastore resources -> Felix's parsed form.

A parsed rule refers to selector IP sets by id (``s:<hash>``, upstream's
``Selector.unique_id``) and carries CIDR lists as normalised tuples (the
dataplane decides whether a list is matched inline or through a named set,
id ``n:<hash>``). Selectors are completed as upstream's
update processors do:

* a namespaced policy's own selector is ANDed with
  ``projectcalico.org/namespace == "<ns>"``; a GlobalNetworkPolicy's with its
  ``namespaceSelector`` (``pcns.`` labels); both with a ``serviceAccountSelector``
  (``pcsa.`` labels);
* in a rule, a ``namespaceSelector`` becomes a selector over ``pcns.`` labels
  (``all()`` -> any namespaced endpoint, ``global()`` -> non-namespaced ones);
  in a namespaced policy a rule with a ``selector`` / ``notSelector`` but no
  ``namespaceSelector`` is restricted to the policy's namespace (the
  ``notSelector`` itself is never restricted);
* ``serviceAccounts`` names match the endpoint's
  ``projectcalico.org/serviceaccount`` label, a service-account selector the
  ``pcsa.`` labels.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from datastore.selector import (
    NAMESPACE_LABEL,
    Selector,
    namespace_selector_to_endpoint_selector,
    parse_selector,
)

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_PREFIX = "pcsa."
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"  # on the endpoint itself
ACTIONS = ("Allow", "Deny", "Log", "Pass")
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}

PortRange = tuple[int, int]


@dataclass(frozen=True)
class IPSetDef:
    """What an IP set holds: the addresses of everything a selector matches
    (or a fixed list of CIDRs)."""

    set_id: str
    selector: Optional[Selector] = None
    nets: frozenset[str] = frozenset()
    # Named-port set: (IANA protocol, port name); members are "<ip>,<port>"
    # for every address of every item the selector matches that has a port of
    # that name and protocol.
    named_port: Optional[tuple[int, str]] = None

    @property
    def is_selector(self) -> bool:
        return self.selector is not None


@dataclass(frozen=True)
class ParsedRule:
    action: str
    versions: tuple[int, ...] = (4, 6)
    protocol: Optional[int] = None  # IANA number
    not_protocol: Optional[int] = None
    icmp_type: Optional[int] = None
    icmp_code: Optional[int] = None
    not_icmp_type: Optional[int] = None
    not_icmp_code: Optional[int] = None
    src_sets: tuple[str, ...] = ()  # selector IP sets that must all contain the source address
    src_not_sets: tuple[str, ...] = ()  # selector IP sets that must not contain it
    dst_sets: tuple[str, ...] = ()
    dst_not_sets: tuple[str, ...] = ()
    src_nets: tuple[str, ...] = ()  # the source is in one of these CIDRs
    src_not_nets: tuple[str, ...] = ()  # ... and in none of these
    dst_nets: tuple[str, ...] = ()
    dst_not_nets: tuple[str, ...] = ()
    # Named ports, as named-port set ids (``p:<hash>``): a named port in
    # ``ports`` is one more alternative next to the numeric ones; in
    # ``notPorts`` one more exclusion.
    src_named_sets: tuple[str, ...] = ()
    src_not_named_sets: tuple[str, ...] = ()
    dst_named_sets: tuple[str, ...] = ()
    dst_not_named_sets: tuple[str, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    src_not_ports: tuple[PortRange, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    dst_not_ports: tuple[PortRange, ...] = ()
    # Set when the rule uses a feature this dataplane cannot express; such a
    # rule is left out (it never matches), and the reason logged.
    unsupported: Optional[str] = None


@dataclass(frozen=True)
class ParsedPolicy:
    policy_id: str  # "np/<ns>/<name>" or "gnp/<name>"
    tier: str
    order: Optional[float]
    selector: Selector
    types: frozenset[str]
    ingress: tuple[ParsedRule, ...]
    egress: tuple[ParsedRule, ...]
    ipsets: tuple[IPSetDef, ...] = field(default=(), compare=False)

    @property
    def sort_key(self) -> tuple[float, str]:
        return (self.order if self.order is not None else float("inf"), self.name)

    @property
    def name(self) -> str:
        return self.policy_id.rsplit("/", 1)[-1]

    def applies(self, direction: str) -> bool:
        return direction in self.types


@dataclass(frozen=True)
class ParsedProfile:
    profile_id: str
    ingress: tuple[ParsedRule, ...]
    egress: tuple[ParsedRule, ...]
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    ipsets: tuple[IPSetDef, ...] = field(default=(), compare=False)


# -- ids ------------------------------------------------------------------------


def policy_id(kind: str, name: str, namespace: Optional[str] = None) -> str:
    if kind == "NetworkPolicy":
        return f"np/{namespace}/{name}"
    if kind == "GlobalNetworkPolicy":
        return f"gnp/{name}"
    raise ValueError(f"not a policy kind: {kind}")


def nets_set_id(nets: Iterable[str]) -> str:
    canonical = ",".join(sorted(str(n) for n in nets))
    digest = hashlib.sha224(("n:" + canonical).encode()).digest()
    return "n:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# -- selectors ---------------------------------------------------------------------


def _and(*parts: Optional[str]) -> Optional[str]:
    present = [p for p in parts if p and p.strip()]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return " && ".join(f"({p})" for p in present)


def _ns_equals(namespace: str) -> str:
    return f'{NAMESPACE_LABEL} == "{namespace}"'


def _prefixed(text: str, prefix: str) -> str:
    return parse_selector(text).with_label_prefix(prefix).canonical


def _service_account_selector(sa: Any) -> Optional[str]:
    if sa is None:
        return None
    parts = []
    if sa.names:
        names = ", ".join(f'"{n}"' for n in sa.names)
        parts.append(f"{SERVICE_ACCOUNT_LABEL} in {{{names}}}")
    if sa.selector:
        parts.append(_prefixed(sa.selector, SERVICE_ACCOUNT_PREFIX))
    return _and(*parts)


def policy_selector(spec: Any, namespace: Optional[str]) -> Selector:
    """The effective endpoint selector of a (Global)NetworkPolicy spec."""
    ns_part: Optional[str] = None
    if namespace is not None:
        ns_part = _ns_equals(namespace)
    elif getattr(spec, "namespace_selector", None):
        ns_part = namespace_selector_to_endpoint_selector(spec.namespace_selector).canonical
    sa_part = (
        _prefixed(spec.service_account_selector, SERVICE_ACCOUNT_PREFIX)
        if spec.service_account_selector
        else None
    )
    text = _and(ns_part, spec.selector, sa_part)
    return parse_selector(text or "all()")


# -- rules -----------------------------------------------------------------------------


def _port_ranges(ports: Optional[list[Any]]) -> tuple[tuple[PortRange, ...], tuple[str, ...]]:
    ranges: list[PortRange] = []
    named: list[str] = []
    for p in ports or ():
        if isinstance(p, int):
            ranges.append((p, p))
        elif ":" in p:
            lo, hi = p.split(":", 1)
            ranges.append((int(lo), int(hi)))
        elif p.isdigit():
            ranges.append((int(p), int(p)))
        else:
            named.append(p)
    return tuple(ranges), tuple(named)


def protocol_number(p: Any) -> Optional[int]:
    if p is None:
        return None
    if isinstance(p, int):
        return p
    return PROTOCOL_NUMBERS[p]


def _nets_versions(nets: Iterable[str]) -> set[int]:
    return {ipaddress.ip_network(n, strict=False).version for n in nets}


class _SetCollector:
    def __init__(self) -> None:
        self.sets: dict[str, IPSetDef] = {}

    def named_ports(self, selector: Optional[str], protocol: Optional[int],
                    names: tuple[str, ...]) -> tuple[str, ...]:
        if not names or protocol is None:
            return ()
        sel = parse_selector(selector or "all()")
        out = []
        for name in names:
            digest = hashlib.sha224(f"p:{sel.canonical}|{protocol}|{name}".encode()).digest()
            sid = "p:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            self.sets.setdefault(sid, IPSetDef(sid, selector=sel, named_port=(protocol, name)))
            out.append(sid)
        return tuple(out)

    def selector(self, text: Optional[str]) -> tuple[str, ...]:
        if not text:
            return ()
        sel = parse_selector(text)
        sid = sel.unique_id()
        self.sets.setdefault(sid, IPSetDef(sid, selector=sel))
        return (sid,)


def _nets(nets: Optional[list[str]]) -> tuple[str, ...]:
    """Normalised (masked, de-duplicated, sorted) CIDRs."""
    return tuple(sorted({str(ipaddress.ip_network(n, strict=False)) for n in nets or ()}))


def _entity_selectors(er: Any, namespace: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(positive selector, negative selector) for one side of a rule."""
    ns_part: Optional[str] = None
    sa_part = _service_account_selector(er.service_accounts)
    if er.namespace_selector:
        ns_part = namespace_selector_to_endpoint_selector(er.namespace_selector).canonical
    elif namespace is not None and (er.selector or er.not_selector or sa_part):
        ns_part = _ns_equals(namespace)
    positive = _and(ns_part, er.selector, sa_part)
    return positive, er.not_selector


def parse_rule(rule: Any, namespace: Optional[str], sets: _SetCollector) -> ParsedRule:
    """Convert one datastore Rule (pydantic model)."""
    unsupported: list[str] = []
    versions = {4, 6}
    if rule.ip_version is not None:
        versions &= {rule.ip_version}
    if rule.protocol == "ICMP":
        versions &= {4}
    elif rule.protocol == "ICMPv6":
        versions &= {6}
    all_nets = [*(rule.source.nets or ()), *(rule.source.not_nets or ()),
                *(rule.destination.nets or ()), *(rule.destination.not_nets or ())]
    if all_nets:
        versions &= _nets_versions(all_nets)

    src_pos, src_neg = _entity_selectors(rule.source, namespace)
    dst_pos, dst_neg = _entity_selectors(rule.destination, namespace)
    src_ports, src_named = _port_ranges(rule.source.ports)
    src_not_ports, src_not_named = _port_ranges(rule.source.not_ports)
    dst_ports, dst_named = _port_ranges(rule.destination.ports)
    dst_not_ports, dst_not_named = _port_ranges(rule.destination.not_ports)
    protocol = protocol_number(rule.protocol)
    if rule.source.services is not None or rule.destination.services is not None:
        unsupported.append("service matches")

    icmp = rule.icmp
    not_icmp = rule.not_icmp
    return ParsedRule(
        action=rule.action,
        versions=tuple(sorted(versions)),
        protocol=protocol,
        not_protocol=protocol_number(rule.not_protocol),
        icmp_type=icmp.type if icmp else None,
        icmp_code=icmp.code if icmp else None,
        not_icmp_type=not_icmp.type if not_icmp else None,
        not_icmp_code=not_icmp.code if not_icmp else None,
        src_sets=sets.selector(src_pos),
        src_not_sets=sets.selector(src_neg),
        dst_sets=sets.selector(dst_pos),
        dst_not_sets=sets.selector(dst_neg),
        src_nets=_nets(rule.source.nets),
        src_not_nets=_nets(rule.source.not_nets),
        dst_nets=_nets(rule.destination.nets),
        dst_not_nets=_nets(rule.destination.not_nets),
        src_named_sets=sets.named_ports(src_pos, protocol, src_named),
        src_not_named_sets=sets.named_ports(src_pos, protocol, src_not_named),
        dst_named_sets=sets.named_ports(dst_pos, protocol, dst_named),
        dst_not_named_sets=sets.named_ports(dst_pos, protocol, dst_not_named),
        src_ports=src_ports,
        src_not_ports=src_not_ports,
        dst_ports=dst_ports,
        dst_not_ports=dst_not_ports,
        unsupported=", ".join(unsupported) or None,
    )


def _parse_rules(rules: Optional[list[Any]], namespace: Optional[str],
                 sets: _SetCollector) -> tuple[ParsedRule, ...]:
    return tuple(parse_rule(r, namespace, sets) for r in rules or ())


def parse_policy(resource: Any) -> ParsedPolicy:
    """A validated NetworkPolicy / GlobalNetworkPolicy model -> ParsedPolicy."""
    kind = resource.kind
    namespace = resource.metadata.namespace if kind == "NetworkPolicy" else None
    spec = resource.spec
    sets = _SetCollector()
    ingress = _parse_rules(spec.ingress, namespace, sets)
    egress = _parse_rules(spec.egress, namespace, sets)
    return ParsedPolicy(
        policy_id=policy_id(kind, resource.metadata.name, namespace),
        tier=spec.tier or "default",
        order=spec.order,
        selector=policy_selector(spec, namespace),
        types=frozenset(spec.types or ()),
        ingress=ingress,
        egress=egress,
        ipsets=tuple(sets.sets.values()),
    )


def parse_profile(resource: Any) -> ParsedProfile:
    spec = resource.spec
    sets = _SetCollector()
    return ParsedProfile(
        profile_id=resource.metadata.name,
        ingress=_parse_rules(spec.ingress, None, sets),
        egress=_parse_rules(spec.egress, None, sets),
        labels=dict(spec.labels_to_apply or {}),
        ipsets=tuple(sets.sets.values()),
    )
