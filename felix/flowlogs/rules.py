"""NFLOG annotations for the nftables policy rules.

With flow logs on, every rule that decides a new connection also sends the
packet to NFLOG group ``N`` with a prefix naming the rule:

* policy / profile rules with Allow or Deny (Pass and Log do not decide);
* the end-of-tier deny of each tier (``{if no pass} drop``) in the endpoint chains;
* the final drop of an endpoint chain (no policy or profile matched).

Only packets that reach the policy chains are logged: conntrack accepts the
rest of an allowed connection before them, so this is one record per new
connection and direction (and one per retransmission of a denied one).

Prefix: ``<A|D><I|E><rule>|<what>`` where ``what`` is the policy id, ``pro:<profile>``,
``tier:<tier>`` or empty; too long (the kernel keeps 127 bytes) -> ``h:<hash>``,
resolved through :attr:`RuleLogger.refs`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule

MAX_PREFIX = 63


@dataclass(frozen=True)
class RuleRef:
    kind: str  # policy | profile | tier-default | no-match
    name: str
    tier: Optional[str]
    direction: str  # Ingress | Egress
    rule: Optional[int]
    action: str  # Allow | Deny

    @property
    def reporter(self) -> str:
        return "src" if self.direction == "Egress" else "dst"

    def policy_string(self) -> str:
        """Upstream's flow-log policy hit format: ``<index>|<tier>|<name>|<action>|<rule>``."""
        name = {"tier-default": "__DEFAULT_DENY__", "no-match": "__NO_MATCH__"}.get(self.kind, self.name)
        if self.kind == "profile":
            name = f"__PROFILE__.{self.name}"
        rule = "-" if self.rule is None else str(self.rule)
        return f"0|{self.tier or '__PROFILE__'}|{name}|{self.action.lower()}|{rule}"


def encode(ref: RuleRef) -> str:
    what = {"policy": ref.name, "profile": f"pro:{ref.name}", "tier-default": f"tier:{ref.name}",
            "no-match": ""}[ref.kind]
    prefix = f"{ref.action[0]}{ref.direction[0]}{'' if ref.rule is None else ref.rule}|{what}"
    if len(prefix) > MAX_PREFIX:
        digest = hashlib.sha256(repr(ref).encode()).hexdigest()[:16]
        prefix = f"{ref.action[0]}{ref.direction[0]}|h:{digest}"
    return prefix


def decode(prefix: str) -> Optional[RuleRef]:
    """A readable prefix -> RuleRef (without the tier, which only the logger knows)."""
    head, sep, what = prefix.partition("|")
    if not sep or len(head) < 2 or head[0] not in "AD" or head[1] not in "IE":
        return None
    action = "Allow" if head[0] == "A" else "Deny"
    direction = "Ingress" if head[1] == "I" else "Egress"
    rule = int(head[2:]) if head[2:].isdigit() else None
    if what.startswith("h:"):
        return None
    if what.startswith("pro:"):
        return RuleRef("profile", what[4:], None, direction, rule, action)
    if what.startswith("tier:"):
        return RuleRef("tier-default", what[5:], what[5:], direction, None, action)
    if not what:
        return RuleRef("no-match", "", None, direction, None, action)
    return RuleRef("policy", what, None, direction, rule, action)


class RuleLogger:
    """Adds ``log group`` statements to rendered rules; remembers each prefix."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.refs: dict[str, RuleRef] = {}

    def _log(self, ref: RuleRef) -> str:
        prefix = encode(ref)
        self.refs[prefix] = ref
        return f'log prefix "{prefix}" group {self.group}'

    def lookup(self, prefix: str) -> Optional[RuleRef]:
        return self.refs.get(prefix) or decode(prefix)

    def rule(self, owner: tuple[str, str], direction: str, index: int, rule: ParsedRule,
             tier: Optional[str], texts: list[str]) -> list[str]:
        if rule.action not in ("Allow", "Deny"):
            return texts
        kind = "policy" if owner[0] == "policy" else "profile"
        stmt = self._log(RuleRef(kind, owner[1], tier, direction, index, rule.action))
        return [_insert(t, rule.action, stmt) for t in texts]

    def endpoint_chain(self, direction: str, tiers: Sequence[TierPolicies], rules: list[str]) -> list[str]:
        deny_tiers = iter([t for t in tiers if t.default_action == "Deny"])
        out = []
        for n, text in enumerate(rules):
            if text == "drop" and n == len(rules) - 1:
                text = f"{self._log(RuleRef('no-match', '', None, direction, None, 'Deny'))} drop"
            elif text.endswith(" drop") and "meta mark" in text:
                tier = next(deny_tiers, None)
                if tier is not None:
                    ref = RuleRef("tier-default", tier.name, tier.name, direction, None, "Deny")
                    text = text[: -len("drop")] + f"{self._log(ref)} drop"
            out.append(text)
        return out


def _insert(text: str, action: str, stmt: str) -> str:
    """Put ``stmt`` before the rule's verdict statements."""
    if action == "Deny" and (text == "drop" or text.endswith(" drop")):
        return text[: -len("drop")] + f"{stmt} drop"
    pos = text.rfind("meta mark set meta mark |")
    if pos < 0:
        return text
    return text[:pos] + f"{stmt} " + text[pos:]
