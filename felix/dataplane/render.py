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
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule, PortRange

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


def set_name(set_id: str, version: int) -> str:
    """``s:<hash>`` -> ``s4-<hash>`` / ``s6-<hash>``; ``n:<hash>`` -> ``n4-``/``n6-``."""
    kind, _, digest = set_id.partition(":")
    return f"{kind}{version}-{digest}"


def _ports(ranges: Sequence[PortRange]) -> str:
    items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in sorted(set(ranges))]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _proto(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


def _uses_version(rule: ParsedRule) -> bool:
    return bool(
        rule.src_sets or rule.src_not_sets or rule.dst_sets or rule.dst_not_sets
        or rule.icmp_type is not None or rule.not_icmp_type is not None
        or len(rule.versions) == 1
    )


def render_rule(rule: ParsedRule, marks: Marks, log_prefix: str = "calico-packet",
                in_profile: bool = False) -> list[str]:
    """nft rule texts for one rule (one per IP version when it matches
    addresses; none when it cannot match anything)."""
    if rule.unsupported or not rule.versions:
        return []
    if rule.action == "Allow":
        verdict = f"{marks.set_accept} return"
    elif rule.action == "Pass":
        verdict = "return" if in_profile else f"{marks.set_pass} return"
    elif rule.action == "Deny":
        verdict = "drop"
    else:  # Log
        verdict = f'log prefix "{log_prefix}: "'
    versions: Iterable[int | None] = rule.versions if _uses_version(rule) else (None,)
    out = []
    for v in versions:
        parts: list[str] = []
        ip = "ip" if v == 4 else "ip6"
        addr_match = rule.src_sets or rule.src_not_sets or rule.dst_sets or rule.dst_not_sets
        if v is not None and not addr_match:
            parts.append(f"meta nfproto ipv{v}")
        if rule.protocol is not None:
            parts.append(f"meta l4proto {_proto(rule.protocol)}")
        if rule.not_protocol is not None:
            parts.append(f"meta l4proto != {_proto(rule.not_protocol)}")
        kw = "icmp" if v == 4 else "icmpv6"
        if rule.icmp_type is not None:
            parts.append(f"{kw} type {rule.icmp_type}")
            if rule.icmp_code is not None:
                parts.append(f"{kw} code {rule.icmp_code}")
        if rule.not_icmp_type is not None:
            if rule.not_icmp_code is None:
                parts.append(f"{kw} type != {rule.not_icmp_type}")
            else:
                parts.append(f"{kw} type . {kw} code != {{ {rule.not_icmp_type} . {rule.not_icmp_code} }}")
        assert v is not None or not addr_match
        for sid in rule.src_sets:
            parts.append(f"{ip} saddr @{set_name(sid, v or 4)}")
        for sid in rule.src_not_sets:
            parts.append(f"{ip} saddr != @{set_name(sid, v or 4)}")
        for sid in rule.dst_sets:
            parts.append(f"{ip} daddr @{set_name(sid, v or 4)}")
        for sid in rule.dst_not_sets:
            parts.append(f"{ip} daddr != @{set_name(sid, v or 4)}")
        if rule.src_ports:
            parts.append(f"th sport {_ports(rule.src_ports)}")
        if rule.src_not_ports:
            parts.append(f"th sport != {_ports(rule.src_not_ports)}")
        if rule.dst_ports:
            parts.append(f"th dport {_ports(rule.dst_ports)}")
        if rule.dst_not_ports:
            parts.append(f"th dport != {_ports(rule.dst_not_ports)}")
        parts.append(verdict)
        out.append(" ".join(parts))
    return out


def render_rules(rules: Iterable[ParsedRule], marks: Marks, log_prefix: str = "calico-packet",
                 in_profile: bool = False) -> list[str]:
    out: list[str] = []
    for r in rules:
        out.extend(render_rule(r, marks, log_prefix, in_profile))
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
