"""Rendering of parsed rules, policies and endpoints to iptables rule text.

Pure functions, no kernel access. Chain names are upstream Felix's
(``cali-pi-``/``cali-po-`` policy, ``cali-pri-``/``cali-pro-`` profile,
``cali-tw-``/``cali-fw-`` to/from workload), at most 28 characters: a longer
name becomes ``<prefix>_<base64url SHA-256 of the id>`` cut to 28.

Mark protocol (same as the nftables renderer): Allow sets the accept mark and
returns, Pass sets the pass mark and returns, Deny drops, Log logs and
continues. iptables has one target per rule, so "set mark and return" is the
MARK rule followed by a shared ``-m mark --mark accept -j RETURN`` rule.
OR-alternatives (several ports past multiport's 15, named ports next to
numeric ones, ICMP negations) become one rule per alternative, as in the
nftables renderer; CIDR lists longer than one entry and every negated CIDR
list are matched through ``hash:net`` IP sets.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
from typing import Callable, Optional, Protocol, Sequence

from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule, PortRange
from felix.dataplane.render import EGRESS, INGRESS, Marks, merge_ranges, proto_name

MAX_CHAIN = 28
PREFIX = "cali-"
PORT_PROTOCOLS = {6, 17, 132, 136}
MULTIPORT_MAX = 15


def chain_name(prefix: str, ident: str) -> str:
    name = prefix + ident
    if len(name) <= MAX_CHAIN:
        return name
    digest = base64.urlsafe_b64encode(hashlib.sha256(ident.encode()).digest()).decode()
    return (prefix + "_" + digest)[:MAX_CHAIN]


def policy_chain(policy_id: str, direction: str) -> str:
    return chain_name("cali-pi-" if direction == INGRESS else "cali-po-", policy_id)


def profile_chain(profile_id: str, direction: str) -> str:
    return chain_name("cali-pri-" if direction == INGRESS else "cali-pro-", profile_id)


def endpoint_chain(iface: str, direction: str) -> str:
    return chain_name("cali-tw-" if direction == INGRESS else "cali-fw-", iface)


class IptMarks:
    """iptables spellings of the accept / pass marks."""

    def __init__(self, marks: Marks) -> None:
        self.accept = marks.accept
        self.pass_ = marks.pass_
        both = marks.accept | marks.pass_
        self.clear_both = f"-j MARK --set-xmark 0x0/{both:#x}"
        self.clear_pass = f"-j MARK --set-xmark 0x0/{marks.pass_:#x}"
        self.set_accept = f"-j MARK --set-xmark {marks.accept:#x}/{marks.accept:#x}"
        self.set_pass = f"-j MARK --set-xmark {marks.pass_:#x}/{marks.pass_:#x}"
        self.if_accept = f"-m mark --mark {marks.accept:#x}/{marks.accept:#x}"
        self.if_pass = f"-m mark --mark {marks.pass_:#x}/{marks.pass_:#x}"
        self.if_no_pass = f"-m mark --mark 0x0/{marks.pass_:#x}"


class SetNamer(Protocol):
    def selector_set(self, set_id: str, version: int) -> str: ...

    def nets_set(self, nets: tuple[str, ...], version: int) -> str: ...


def _port(r: PortRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}:{r[1]}"


def _multiport_chunks(ranges: Sequence[PortRange]) -> list[str]:
    """Comma lists for ``-m multiport`` (a range counts as two of its 15 slots)."""
    chunks: list[str] = []
    cur: list[str] = []
    used = 0
    for r in merge_ranges(ranges):
        cost = 1 if r[0] == r[1] else 2
        if used + cost > MULTIPORT_MAX:
            chunks.append(",".join(cur))
            cur, used = [], 0
        cur.append(_port(r))
        used += cost
    if cur:
        chunks.append(",".join(cur))
    return chunks


def render_rule(rule: ParsedRule, version: int, marks: IptMarks, namer: SetNamer,
                log_prefix: str = "calico-packet", in_profile: bool = False) -> list[str]:
    """iptables rule texts (without ``-A chain``) for one rule in one IP version."""
    if rule.unsupported or version not in rule.versions:
        return []
    if rule.action == "Allow":
        targets = [marks.set_accept, f"{marks.if_accept} -j RETURN"]
    elif rule.action == "Pass":
        targets = ["-j RETURN"] if in_profile else [marks.set_pass, f"{marks.if_pass} -j RETURN"]
    elif rule.action == "Deny":
        targets = ["-j DROP"]
    else:
        targets = [f'-j LOG --log-prefix "{log_prefix}: " --log-level 5']
    common: list[str] = []
    alternatives: list[list[str]] = []
    if rule.protocol is not None:
        common.append(f"-p {proto_name(rule.protocol)}")
    if rule.not_protocol is not None:
        common.append(f"! -p {proto_name(rule.not_protocol)}")
    icmp_m = "-m icmp --icmp-type" if version == 4 else "-m icmp6 --icmpv6-type"
    icmp_not = "-m icmp ! --icmp-type" if version == 4 else "-m icmp6 ! --icmpv6-type"
    if rule.icmp_type is not None:
        code = f"/{rule.icmp_code}" if rule.icmp_code is not None else ""
        common.append(f"{icmp_m} {rule.icmp_type}{code}")
    if rule.not_icmp_type is not None:
        code = f"/{rule.not_icmp_code}" if rule.not_icmp_code is not None else ""
        common.append(f"{icmp_not} {rule.not_icmp_type}{code}")
    for flag, direction, sets, not_sets, nets, not_nets in (
        ("-s", "src", rule.src_sets, rule.src_not_sets, rule.src_nets, rule.src_not_nets),
        ("-d", "dst", rule.dst_sets, rule.dst_not_sets, rule.dst_nets, rule.dst_not_nets),
    ):
        nets_v = tuple(n for n in nets if (":" in n) == (version == 6))
        not_nets_v = tuple(n for n in not_nets if (":" in n) == (version == 6))
        if nets and not nets_v:
            return []  # only CIDRs of the other family: cannot match
        if len(nets_v) == 1:
            common.append(f"{flag} {nets_v[0]}")
        elif nets_v:
            common.append(f"-m set --match-set {namer.nets_set(nets_v, version)} {direction}")
        if not_nets_v:
            common.append(f"-m set ! --match-set {namer.nets_set(not_nets_v, version)} {direction}")
        for sid in sets:
            common.append(f"-m set --match-set {namer.selector_set(sid, version)} {direction}")
        for sid in not_sets:
            common.append(f"-m set ! --match-set {namer.selector_set(sid, version)} {direction}")
    has_ports = rule.protocol in PORT_PROTOCOLS
    for kind, direction, ports, not_ports, named, not_named in (
        ("sports", "src", rule.src_ports, rule.src_not_ports, rule.src_named_sets, rule.src_not_named_sets),
        ("dports", "dst", rule.dst_ports, rule.dst_not_ports, rule.dst_named_sets, rule.dst_not_named_sets),
    ):
        if (ports or not_ports) and not has_ports:
            return []  # ports need tcp/udp/sctp/udplite (validation requires it)
        for chunk in _multiport_chunks(not_ports):
            common.append(f"-m multiport ! --{kind} {chunk}")
        for sid in not_named:
            common.append(f"-m set ! --match-set {namer.selector_set(sid, version)} {direction},{direction}")
        if ports or named:
            options = [f"-m multiport --{kind} {c}" for c in _multiport_chunks(ports)]
            options += [f"-m set --match-set {namer.selector_set(sid, version)} {direction},{direction}"
                        for sid in named]
            alternatives.append(options)
    out: list[str] = []
    for combo in itertools.product(*alternatives):
        match = " ".join([*common, *combo])
        out.append(f"{match} {targets[0]}".strip())
    # The shared "return if decided" rule after the alternatives.
    if len(targets) > 1 and out:
        out.append(targets[1])
    return out


def render_endpoint_chain(tiers: Sequence[TierPolicies], profiles: Sequence[str], direction: str,
                          marks: IptMarks, conntrack: list[str],
                          policy_chain_name: Callable[[str, str], str] = policy_chain,
                          profile_chain_name: Callable[[str, str], str] = profile_chain) -> list[str]:
    rules = [*conntrack, marks.clear_both]
    for n, tier in enumerate(tiers):
        if n:
            rules.append(marks.clear_pass)
        for i, pid in enumerate(tier.policies):
            jump = f"-j {policy_chain_name(pid, direction)}"
            rules.append(jump if i == 0 else f"{marks.if_no_pass} {jump}")
            rules.append(f"{marks.if_accept} -j RETURN")
        if tier.default_action == "Deny":
            rules.append(f"{marks.if_no_pass} -j DROP")
    for p in profiles:
        rules.append(f"-j {profile_chain_name(p, direction)}")
        rules.append(f"{marks.if_accept} -j RETURN")
    rules.append("-j DROP")
    return rules


def rule_hash(chain: str, index: int, rule: str) -> str:
    """16-character id carried in each rule's comment (``cali:<hash>``), so a
    read-back can tell our rules and their positions without parsing them."""
    digest = hashlib.sha224(f"{chain}\0{index}\0{rule}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:16]


def with_comment(chain: str, index: int, rule: str) -> str:
    return f'-m comment --comment "cali:{rule_hash(chain, index, rule)}" {rule}'
