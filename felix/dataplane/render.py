"""Rendering of parsed rules, policies, profiles and endpoints to nft rule text.

Pure functions: no kernel access. Names follow upstream Felix's chain
vocabulary (``pi-``/``po-`` policy in/out, ``pri-``/``pro-`` profile in/out,
``tw-``/``fw-`` to/from workload); nftables allows long names, so the policy
id is used directly (hashed only past 200 characters).

Verdicts inside policy chains follow upstream's mark protocol: Allow sets the
accept mark and returns, Pass sets the pass mark and returns, Deny drops,
Log logs and continues. The endpoint chain walks tiers and profiles and
returns with the accept mark set when the packet is allowed in that
direction, or drops it.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol, Sequence

from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule, PortRange, nets_set_id

MAX_NAME = 200
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True)
class Marks:
    """Mark bits, allocated from the mark mask lowest bit first (upstream)."""

    accept: int
    pass_: int

    @classmethod
    def from_mask(cls, mask: int) -> "Marks":
        bits = [1 << i for i in range(32) if mask & (1 << i)]
        if len(bits) < 2:
            raise ValueError(f"mark mask {mask:#x} needs at least two bits")
        return cls(bits[0], bits[1])

    @property
    def clear_both(self) -> str:
        return f"meta mark set meta mark & {~(self.accept | self.pass_) & 0xFFFFFFFF:#010x}"

    @property
    def clear_pass(self) -> str:
        return f"meta mark set meta mark & {~self.pass_ & 0xFFFFFFFF:#010x}"

    @property
    def set_accept(self) -> str:
        return f"meta mark set meta mark | {self.accept:#010x}"

    @property
    def set_pass(self) -> str:
        return f"meta mark set meta mark | {self.pass_:#010x}"

    @property
    def if_accept(self) -> str:
        return f"meta mark & {self.accept:#010x} != 0"

    @property
    def if_no_pass(self) -> str:
        return f"meta mark & {self.pass_:#010x} == 0"


def _safe(prefix: str, ident: str) -> str:
    name = f"{prefix}{ident}"
    if len(name) <= MAX_NAME:
        return name
    digest = base64.urlsafe_b64encode(hashlib.sha256(ident.encode()).digest()).rstrip(b"=").decode()
    return f"{prefix}h-{digest}"


def policy_chain(policy_id: str, direction: str) -> str:
    return _safe("pi-" if direction == INGRESS else "po-", policy_id)


def profile_chain(profile_id: str, direction: str) -> str:
    return _safe("pri-" if direction == INGRESS else "pro-", profile_id)


def endpoint_chain(iface: str, direction: str) -> str:
    # to-workload = the endpoint's ingress; from-workload = its egress.
    return ("tw-" if direction == INGRESS else "fw-") + iface


def set_name(set_id: str, version: int, interval: bool = False) -> str:
    """``s:<hash>`` -> ``s4-<hash>`` / ``s6-<hash>`` (``s4i-`` for the interval
    variant, needed once a set holds CIDRs); ``n:<hash>`` -> ``n4-``/``n6-``."""
    kind, _, digest = set_id.partition(":")
    return f"{kind}{version}{'i' if interval else ''}-{digest}"


INLINE_NETS_MAX = 8  # longer CIDR lists are matched through a named interval set


class SetNamer(Protocol):
    """Chooses the nft set a rule refers to."""

    def selector_set(self, set_id: str, version: int) -> str:
        """Selector and named-port sets."""
        ...

    def nets_set(self, nets: tuple[str, ...], version: int) -> Optional[str]:
        """A named set for this CIDR list, or None to match it inline."""
        ...


class DefaultNamer:
    def selector_set(self, set_id: str, version: int) -> str:
        return set_name(set_id, version)

    def nets_set(self, nets: tuple[str, ...], version: int) -> Optional[str]:
        if len(nets) <= INLINE_NETS_MAX:
            return None
        return set_name(nets_set_id(nets), version)


def merge_ranges(ranges: Sequence[PortRange]) -> list[PortRange]:
    out: list[PortRange] = []
    for lo, hi in sorted(set(ranges)):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _port(r: PortRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def proto_name(number: int) -> str:
    """Kernel spelling of an IP protocol number (nft and iptables agree)."""
    return PROTOCOL_NAMES.get(number, str(number))


def _matches_addresses(rule: ParsedRule) -> bool:
    return bool(
        rule.src_sets or rule.src_not_sets or rule.dst_sets or rule.dst_not_sets
        or rule.src_nets or rule.src_not_nets or rule.dst_nets or rule.dst_not_nets
        or rule.src_named_sets or rule.src_not_named_sets or rule.dst_named_sets or rule.dst_not_named_sets
    )


def _uses_version(rule: ParsedRule) -> bool:
    return (_matches_addresses(rule) or rule.icmp_type is not None
            or rule.not_icmp_type is not None or len(rule.versions) == 1)


def render_rule(rule: ParsedRule, marks: Marks, log_prefix: str = "calico-packet",
                in_profile: bool = False, namer: Optional[SetNamer] = None) -> list[str]:
    """nft rule texts for one rule: one per IP version when it matches
    addresses, and one per alternative when it lists several CIDRs or ports
    (OR), which keeps rules free of anonymous sets (each anonymous set costs
    libnftables' cache on every later transaction). None when the rule cannot
    match anything."""
    if rule.unsupported or not rule.versions:
        return []
    namer = namer or DefaultNamer()
    if rule.action == "Allow":
        verdict = f"{marks.set_accept} return"
    elif rule.action == "Pass":
        verdict = "return" if in_profile else f"{marks.set_pass} return"
    elif rule.action == "Deny":
        verdict = "drop"
    else:  # Log
        verdict = f'log prefix "{log_prefix}: "'
    versions: Iterable[Optional[int]] = rule.versions if _uses_version(rule) else (None,)
    out = []
    for v in versions:
        common: list[str] = []
        alternatives: list[list[str]] = []
        ip = "ip" if v == 4 else "ip6"
        if v is not None and not _matches_addresses(rule):
            common.append(f"meta nfproto ipv{v}")
        if rule.protocol is not None:
            common.append(f"meta l4proto {proto_name(rule.protocol)}")
        if rule.not_protocol is not None:
            common.append(f"meta l4proto != {proto_name(rule.not_protocol)}")
        kw = "icmp" if v == 4 else "icmpv6"
        if rule.icmp_type is not None:
            common.append(f"{kw} type {rule.icmp_type}")
            if rule.icmp_code is not None:
                common.append(f"{kw} code {rule.icmp_code}")
        if rule.not_icmp_type is not None:
            t, c = rule.not_icmp_type, rule.not_icmp_code
            if c is None:
                common.append(f"{kw} type != {t}")
            else:  # not (type t and code c) = other type, or type t with another code
                alternatives.append([f"{kw} type != {t}", f"{kw} type {t} {kw} code != {c}"])
        for field, sets, not_sets, nets, not_nets in (
            ("saddr", rule.src_sets, rule.src_not_sets, rule.src_nets, rule.src_not_nets),
            ("daddr", rule.dst_sets, rule.dst_not_sets, rule.dst_nets, rule.dst_not_nets),
        ):
            if v is None:
                break
            for sid in sets:
                common.append(f"{ip} {field} @{namer.selector_set(sid, v)}")
            for sid in not_sets:
                common.append(f"{ip} {field} != @{namer.selector_set(sid, v)}")
            if nets:
                named = namer.nets_set(nets, v)
                if named:
                    common.append(f"{ip} {field} @{named}")
                else:
                    alternatives.append([f"{ip} {field} {n}" for n in nets])
            if not_nets:
                named = namer.nets_set(not_nets, v)
                if named:
                    common.append(f"{ip} {field} != @{named}")
                else:
                    common.extend(f"{ip} {field} != {n}" for n in not_nets)
        for field, addr, ports, not_ports, named, not_named in (
            ("sport", "saddr", rule.src_ports, rule.src_not_ports, rule.src_named_sets, rule.src_not_named_sets),
            ("dport", "daddr", rule.dst_ports, rule.dst_not_ports, rule.dst_named_sets, rule.dst_not_named_sets),
        ):
            for r in merge_ranges(not_ports):
                common.append(f"th {field} != {_port(r)}")
            if v is not None:
                for sid in not_named:
                    common.append(f"{ip} {addr} . th {field} != @{namer.selector_set(sid, v)}")
            if ports or named:
                options = [f"th {field} {_port(r)}" for r in merge_ranges(ports)]
                if v is not None:
                    options += [f"{ip} {addr} . th {field} @{namer.selector_set(sid, v)}" for sid in named]
                alternatives.append(options)
        for combo in itertools.product(*alternatives):
            out.append(" ".join([*common, *combo, verdict]))
    return out


def render_rules(rules: Iterable[ParsedRule], marks: Marks, log_prefix: str = "calico-packet",
                 in_profile: bool = False, namer: Optional[SetNamer] = None) -> list[str]:
    out: list[str] = []
    for r in rules:
        out.extend(render_rule(r, marks, log_prefix, in_profile, namer))
    return out


def render_endpoint_chain(
    tiers: Sequence[TierPolicies],
    profiles: Sequence[str],
    direction: str,
    marks: Marks,
    policy_chain_name: Callable[[str, str], str] = policy_chain,
    profile_chain_name: Callable[[str, str], str] = profile_chain,
) -> list[str]:
    rules = [marks.clear_both]
    for n, tier in enumerate(tiers):
        if n:
            rules.append(marks.clear_pass)
        for i, pid in enumerate(tier.policies):
            jump = f"jump {policy_chain_name(pid, direction)}"
            rules.append(jump if i == 0 else f"{marks.if_no_pass} {jump}")
            rules.append(f"{marks.if_accept} return")
        if tier.default_action == "Deny":
            # End of tier: nothing allowed or passed the packet.
            rules.append(f"{marks.if_no_pass} drop")
    for p in profiles:
        rules.append(f"jump {profile_chain_name(p, direction)}")
        rules.append(f"{marks.if_accept} return")
    rules.append("drop")
    return rules
