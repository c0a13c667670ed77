"""Unit tests (pure) of the NFLOG annotations of rendered nftables rules."""
from __future__ import annotations

from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule
from felix.dataplane import render
from felix.flowlogs.nflog import parse_ip
from felix.flowlogs.rules import RuleLogger, RuleRef, decode, encode

MARKS = render.Marks.from_mask(0xFFFF0000)


def test_prefix_round_trip_and_long_names() -> None:
    for ref in (RuleRef("policy", "np/ns/pol", None, "Ingress", 3, "Deny"),
                RuleRef("profile", "kns.x", None, "Egress", 0, "Allow"),
                RuleRef("tier-default", "security", "security", "Ingress", None, "Deny"),
                RuleRef("no-match", "", None, "Egress", None, "Deny")):
        assert decode(encode(ref)) == ref
    long = RuleRef("policy", "np/" + "n" * 60 + "/" + "p" * 60, "default", "Ingress", 1, "Allow")
    logger = RuleLogger(7)
    rule = ParsedRule(action="Allow", protocol=6)
    texts = logger.rule(("policy", long.name), "Ingress", 1, rule, "default",
                        render.render_rule(rule, MARKS))
    prefix = texts[0].split('log prefix "', 1)[1].split('"', 1)[0]
    assert len(prefix) <= 63 and prefix.startswith("AI|h:")
    assert logger.lookup(prefix) == long


def test_log_goes_before_the_verdict() -> None:
    logger = RuleLogger(42)
    allow = ParsedRule(action="Allow", protocol=6, dst_ports=((80, 80),))
    deny = ParsedRule(action="Deny")
    (a,) = logger.rule(("policy", "gnp/p"), "Ingress", 0, allow, "default", render.render_rule(allow, MARKS))
    (d,) = logger.rule(("policy", "gnp/p"), "Ingress", 1, deny, "default", render.render_rule(deny, MARKS))
    assert a == ('meta l4proto tcp th dport 80 log prefix "AI0|gnp/p" group 42 '
                 f"{MARKS.set_accept} return")
    assert d == 'log prefix "DI1|gnp/p" group 42 drop'
    passed = ParsedRule(action="Pass")
    assert logger.rule(("policy", "gnp/p"), "Ingress", 2, passed, "default",
                       render.render_rule(passed, MARKS)) == render.render_rule(passed, MARKS)


def test_endpoint_chain_drops_are_logged_per_tier() -> None:
    tiers = [TierPolicies("security", "Deny", ("gnp/a",)), TierPolicies("admin", "Pass", ("gnp/b",)),
             TierPolicies("default", "Deny", ("np/x/c",))]
    chain = render.render_endpoint_chain(tiers, ["kns.x"], "Egress", MARKS)
    logger = RuleLogger(3)
    out = logger.endpoint_chain("Egress", tiers, chain)
    logged = [line for line in out if "log prefix" in line]
    assert logged == [f'{MARKS.if_no_pass} log prefix "DE|tier:security" group 3 drop',
                      f'{MARKS.if_no_pass} log prefix "DE|tier:default" group 3 drop',
                      'log prefix "DE|" group 3 drop']
    assert logger.lookup("DE|tier:default") == RuleRef("tier-default", "default", "default", "Egress", None, "Deny")


def test_parse_ip_headers() -> None:
    v4 = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]) + bytes([0x30, 0x39, 0, 80])
    assert parse_ip(v4) == ("10.0.0.1", "10.0.0.2", 6, 12345, 80, None)
    icmp = v4[:9] + bytes([1]) + v4[10:20] + bytes([8, 0])
    assert parse_ip(icmp) == ("10.0.0.1", "10.0.0.2", 1, None, None, 8)
    assert parse_ip(b"") is None
