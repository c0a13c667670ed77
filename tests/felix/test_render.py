"""Unit tests: nft rendering, the table diff engine, k8s conversion, config."""
from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from datastore.models import load_resource
from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule, parse_policy
from felix.config import load_config, parse_duration
from felix.dataplane import render
from felix.dataplane.nft import Nft, NftError
from felix.dataplane.nftables import DataplaneConfig, NftablesDataplane
from felix.dataplane.table import SetType, Table
from felix.k8s_policy import namespace_profile, network_policy

MARKS = render.Marks.from_mask(0xFFFF0000)


def test_marks_from_mask() -> None:
    assert (MARKS.accept, MARKS.pass_) == (0x10000, 0x20000)
    assert render.Marks.from_mask(0xF0).accept == 0x10
    with pytest.raises(ValueError):
        render.Marks.from_mask(0x1)


def test_render_rule_variants() -> None:
    allow = "meta mark set meta mark | 0x00010000 return"
    r = ParsedRule("Allow", protocol=6, src_sets=("s:abc",), dst_ports=((80, 80), (1000, 2000), (1500, 2500)))
    # Alternatives (several ports or CIDRs) become several rules: no anonymous sets.
    assert render.render_rule(r, MARKS) == [
        f"meta l4proto tcp ip saddr @s4-abc th dport 80 {allow}",
        f"meta l4proto tcp ip saddr @s4-abc th dport 1000-2500 {allow}",
        f"meta l4proto tcp ip6 saddr @s6-abc th dport 80 {allow}",
        f"meta l4proto tcp ip6 saddr @s6-abc th dport 1000-2500 {allow}",
    ]
    assert render.render_rule(ParsedRule("Deny"), MARKS) == ["drop"]
    assert render.render_rule(ParsedRule("Deny", versions=(4,)), MARKS) == ["meta nfproto ipv4 drop"]
    assert render.render_rule(ParsedRule("Pass", protocol=17, dst_not_ports=((81, 81), (90, 95))), MARKS) == [
        "meta l4proto udp th dport != 81 th dport != 90-95 meta mark set meta mark | 0x00020000 return"]
    assert render.render_rule(ParsedRule("Pass"), MARKS, in_profile=True) == ["return"]
    assert render.render_rule(ParsedRule("Log"), MARKS) == ['log prefix "calico-packet: "']
    icmp = ParsedRule("Allow", versions=(4,), protocol=1, icmp_type=8, not_icmp_type=3, not_icmp_code=1)
    assert render.render_rule(icmp, MARKS) == [
        f"meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp type != 3 {allow}",
        f"meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp type 3 icmp code != 1 {allow}"]
    nets = ParsedRule("Allow", versions=(4,), src_nets=("10.0.0.0/8", "192.168.0.0/16"),
                      src_not_nets=("10.1.0.0/16",))
    assert render.render_rule(nets, MARKS) == [
        f"ip saddr != 10.1.0.0/16 ip saddr 10.0.0.0/8 {allow}",
        f"ip saddr != 10.1.0.0/16 ip saddr 192.168.0.0/16 {allow}"]
    many = tuple(f"10.{i}.0.0/16" for i in range(render.INLINE_NETS_MAX + 1))
    (text,) = render.render_rule(ParsedRule("Deny", versions=(4,), dst_not_nets=many), MARKS)
    assert text.startswith("ip daddr != @n4-") and text.endswith(" drop")
    named = ParsedRule("Allow", versions=(4,), protocol=6, dst_ports=((443, 443),), dst_named_sets=("p:h",),
                       dst_not_named_sets=("p:x",))
    assert render.render_rule(named, MARKS) == [
        f"meta l4proto tcp ip daddr . th dport != @p4-x th dport 443 {allow}",
        f"meta l4proto tcp ip daddr . th dport != @p4-x ip daddr . th dport @p4-h {allow}"]
    assert render.render_rule(ParsedRule("Allow", unsupported="service matches"), MARKS) == []


def test_render_endpoint_chain_tiers_and_profiles() -> None:
    tiers = [TierPolicies("security", "Pass", ("gnp/a",)), TierPolicies("default", "Deny", ("np/x/p", "np/x/q"))]
    assert render.render_endpoint_chain(tiers, ["kns.x"], render.INGRESS, MARKS) == [
        "meta mark set meta mark & 0xfffcffff",
        "jump pi-gnp/a",
        "meta mark & 0x00010000 != 0 return",
        "meta mark set meta mark & 0xfffdffff",
        "jump pi-np/x/p",
        "meta mark & 0x00010000 != 0 return",
        "meta mark & 0x00020000 == 0 jump pi-np/x/q",
        "meta mark & 0x00010000 != 0 return",
        "meta mark & 0x00020000 == 0 drop",
        "jump pri-kns.x",
        "meta mark & 0x00010000 != 0 return",
        "drop",
    ]
    # No policies: straight to the profiles; no profiles: drop.
    assert render.render_endpoint_chain([], [], render.EGRESS, MARKS) == [
        "meta mark set meta mark & 0xfffcffff", "drop"]


def test_long_names_are_hashed() -> None:
    name = render.policy_chain("np/" + "n" * 60 + "/" + "p" * 240, render.INGRESS)
    assert name.startswith("pi-h-") and len(name) <= render.MAX_NAME


# -- table diff engine --------------------------------------------------------------------------


class FakeNft:
    backend = "fake"

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.fail_next = False

    def run(self, script: str) -> str:
        if self.fail_next:
            self.fail_next = False
            raise NftError("boom", script)
        self.scripts.append(script)
        return ""

    def list_json(self, what: str) -> Any:
        return None


def test_table_transactions_contain_only_changes_in_a_valid_order() -> None:
    fake = FakeNft()
    t = Table(fake, "t")  # type: ignore[arg-type]
    t.set_set("s4-a", SetType("ipv4_addr", True), ["10.0.0.1"])
    t.set_chain("pol", ["ip saddr @s4-a accept"])
    t.set_map("disp", "type ifname : verdict;", {"cali1": "jump ep"})
    t.set_chain("ep", ["jump pol"])
    t.set_chain("base", ["iifname vmap @disp"], hook="type filter hook forward priority filter; policy accept;")
    assert t.apply()
    full = fake.scripts[-1].splitlines()
    assert full[:3] == ["add table inet t", "delete table inet t", "add table inet t"]
    assert full.index("add chain inet t base { type filter hook forward priority filter; policy accept; }") > \
        full.index("add chain inet t ep")
    assert not t.apply()  # nothing changed: no transaction

    t.set_set("s4-a", SetType("ipv4_addr", True), ["10.0.0.1", "10.0.0.2"])
    t.apply()
    assert fake.scripts[-1] == "add table inet t\nadd element inet t s4-a { 10.0.0.2 }\n"

    # Remove an endpoint and its policy: map entry first, then flush, then delete.
    t.set_map_entry("disp", "cali1", None)
    t.remove_chain("ep")
    t.remove_chain("pol")
    t.remove_set("s4-a")
    t.apply()
    lines = fake.scripts[-1].splitlines()
    assert lines.index('delete element inet t disp { "cali1" }') < lines.index("flush chain inet t ep")
    assert lines.index("flush chain inet t pol") < lines.index("delete chain inet t ep")
    assert lines[-1] == "delete set inet t s4-a"

    # A failed transaction makes the next one a full, atomic rewrite.
    t.set_chain("x", ["accept"])
    fake.fail_next = True
    with pytest.raises(NftError):
        t.apply()
    t.apply()
    assert fake.scripts[-1].startswith("add table inet t\ndelete table inet t\n")


@pytest.fixture
def kernel_table():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"felix-unit-{uuid.uuid4().hex[:6]}"
    nft = Nft()
    yield nft, name
    nft.run(f"add table inet {name}\ndelete table inet {name}\n")


def test_table_against_the_kernel_detects_and_repairs_drift(kernel_table) -> None:  # type: ignore[no-untyped-def]
    nft, name = kernel_table
    t = Table(nft, name)
    t.set_set("s4-a", SetType("ipv4_addr", True), ["10.0.0.1", "10.1.0.0/16"])
    t.set_set("ifs", SetType("ifname"), ["caliunit1"])
    t.set_set("p4-a", SetType("ipv4_addr . inet_service"), ["10.0.0.1 . 80", "10.0.0.2 . 8080"])
    t.set_map("disp", "type ifname : verdict;", {"caliunit1": "jump ep"})
    t.set_chain("ep", ["ip saddr @s4-a accept", "drop"])
    t.apply()
    assert t.verify() == []
    nft.run(f"flush chain inet {name} ep\ndelete element inet {name} s4-a {{ 10.0.0.1 }}\n"
            f"add chain inet {name} stray\n")
    problems = t.verify()
    assert set(problems) == {"chain ep has been modified", "set s4-a content differs", "unexpected chain stray"}
    t.apply()
    assert t.verify() == []
    listing = nft.run(f"list table inet {name}")
    assert "stray" not in listing and "10.0.0.1" in listing and "drop" in listing
    nft.run(f"delete table inet {name}\n")
    assert t.verify() == [f"table inet {name} is missing"]
    t.apply()
    assert t.verify() == []


def test_dataplane_renders_fail_closed_and_endpoint_to_host() -> None:
    name = "t"
    fake = FakeNft()
    dp = NftablesDataplane(DataplaneConfig(table=name, endpoint_to_host_action="ACCEPT"), fake)  # type: ignore[arg-type]
    chains = dp.table.chains
    assert 'iifname "cali*" drop' in chains["filter-FORWARD"]
    assert chains["wl-to-host"][-1].endswith("accept")
    dp.reconfigure(DataplaneConfig(table=name, unknown_interface_action="RETURN"))
    assert 'iifname "cali*" drop' not in dp.table.chains["filter-FORWARD"]
    assert dp.table.chains["wl-to-host"][-1] == "drop"


# -- k8s conversion --------------------------------------------------------------------------------


def test_k8s_network_policy_conversion() -> None:
    k8s = {
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                    {"key": "role", "operator": "In", "values": ["b", "a"]}]}},
                          {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                 "ports": [{"port": 80}, {"protocol": "UDP", "port": 53, "endPort": 54}, {"port": "http"}]},
                {},
            ],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}],
        },
    }
    out = network_policy(k8s)
    spec = out["spec"]
    assert out["metadata"] == {"name": "knp.default.web", "namespace": "prod"}
    assert spec["order"] == 1000 and spec["types"] == ["Ingress", "Egress"]
    assert spec["selector"] == "projectcalico.org/orchestrator == 'k8s' && app == 'web'"
    first = spec["ingress"][0]
    assert first["protocol"] == "TCP" and first["destination"]["ports"] == [80, "http"]
    assert first["source"] == {"namespaceSelector": "all()",
                               "selector": "projectcalico.org/orchestrator == 'k8s' && role in { 'a', 'b' }"}
    assert spec["ingress"][1]["protocol"] == "UDP" and spec["ingress"][1]["destination"]["ports"] == ["53:54"]
    assert spec["ingress"][2]["source"] == {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}
    assert spec["ingress"][-1] == {"action": "Allow", "source": {}, "destination": {}}
    assert spec["egress"][0]["destination"]["namespaceSelector"] == "team == 'x'"
    # It is a valid Calico policy.
    parse_policy(load_resource(out))
    deny = network_policy({"metadata": {"name": "d", "namespace": "n"},
                           "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
    assert deny["spec"]["egress"] == [] and "ingress" not in deny["spec"]


def test_namespace_profile() -> None:
    p = namespace_profile("prod", {"team": "x"})
    assert p["metadata"]["name"] == "kns.prod"
    assert p["spec"]["labelsToApply"] == {"pcns.team": "x", "pcns.projectcalico.org/name": "prod"}
    load_resource(p)


# -- config -----------------------------------------------------------------------------------------


def test_config_precedence_and_parsing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg_file = tmp_path / "felix.cfg"
    cfg_file.write_text("[global]\nHealthPort = 9200\nRouteRefreshInterval = 30\nLogSeverityScreen = warning\n")
    env = {"FELIX_HEALTHPORT": "9300", "FELIX_CONFIGFILE": str(cfg_file), "NODENAME": "n1",
           "FELIX_IPV6SUPPORT": "false"}
    default = {"healthPort": 9400, "nftablesRefreshInterval": "1m30s", "routeRefreshInterval": "10s",
               "defaultEndpointToHostAction": "Accept", "etcdEndpoints": "http://ignored:1"}
    node = {"defaultEndpointToHostAction": "Return", "prometheusMetricsPort": 9191, "healthHost": "0.0.0.0"}
    cfg = load_config(env, None, default, node)
    assert cfg.health_port == 9300 and cfg.sources["HealthPort"] == "environment"
    assert cfg.route_refresh_interval == 30.0
    assert cfg.nftables_refresh_interval == 90.0
    assert cfg.default_endpoint_to_host_action == "RETURN"
    assert cfg.prometheus_metrics_port == 9191
    assert cfg.log_severity_screen == "WARNING"
    assert cfg.etcd_endpoints == ""  # local-only: never from the datastore
    assert cfg.hostname == "n1"
    assert cfg.ipv6_support is False
    builtin = load_config({"FELIX_CONFIGFILE": str(tmp_path / "none.cfg")})
    assert (builtin.health_port, builtin.prometheus_metrics_port) == (9099, 9091)
    assert builtin.nftables_table_name == "calico" and builtin.default_endpoint_to_host_action == "DROP"
    assert builtin.iptables_refresh_interval == 180.0 and builtin.route_refresh_interval == 90.0
    bad = load_config({"FELIX_HEALTHPORT": "nope", "FELIX_DEFAULTENDPOINTTOHOSTACTION": "Sometimes",
                       "FELIX_CONFIGFILE": str(tmp_path / "none.cfg")})
    assert bad.health_port == 9099 and bad.default_endpoint_to_host_action == "DROP"
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_dataplane_selector_sets_switch_to_interval_for_cidrs() -> None:
    from datastore.selector import parse_selector
    from felix.calc.rules import ParsedPolicy

    fake = FakeNft()
    dp = NftablesDataplane(DataplaneConfig(table="t", ipv6=False), fake)  # type: ignore[arg-type]
    many = tuple(f"10.{i}.0.0/16" for i in range(render.INLINE_NETS_MAX + 1))
    rule = ParsedRule("Allow", versions=(4,), src_sets=("s:web",), dst_not_nets=many)
    pol = ParsedPolicy("gnp/p", "default", 1.0, parse_selector("all()"), frozenset({"Ingress"}), (rule,), ())
    dp.ipset_added("s:web", frozenset({"10.9.0.1/32"}))
    dp.policy_update(pol)
    chains, sets = dp.table.chains, dp.table.sets
    assert "ip saddr @s4-web" in chains["pi-gnp/p"][0]
    assert sets["s4-web"].interval is False
    (net_set,) = [n for n in sets if n.startswith("n4-")]
    dp.ipset_delta("s:web", frozenset({"192.168.0.0/24"}), frozenset())
    assert "s4-web" not in dp.table.sets and dp.table.sets["s4i-web"].interval
    assert "ip saddr @s4i-web" in dp.table.chains["pi-gnp/p"][0]
    assert dp.table.set_elems["s4i-web"] == {"10.9.0.1", "192.168.0.0/24"}
    assert net_set in dp.table.sets  # still used
    dp.policy_removed("gnp/p")
    assert net_set not in dp.table.sets
