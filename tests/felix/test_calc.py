"""Unit tests of Felix's calculation layer (pure logic, no kernel)."""
from __future__ import annotations

from typing import Any

from datastore.keys import ResourceKey
from datastore.selector import parse_selector
from datastore.syncer import Update
from felix.calc.graph import CalcGraph, LocalEndpoint, Pool
from felix.calc.ipsets import IPSetCalculator
from felix.calc.labels import LabelIndex
from felix.calc.policies import PolicyResolver
from felix.calc.rules import IPSetDef, ParsedPolicy, ParsedProfile, parse_policy
from datastore.models import load_resource

NODE = "node1"


# -- label index -----------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any, Any]] = []

    def started(self, s: Any, i: Any) -> None:
        self.log.append(("+", s, i))

    def stopped(self, s: Any, i: Any) -> None:
        self.log.append(("-", s, i))

    def take(self) -> set[tuple[str, Any, Any]]:
        out = set(self.log)
        self.log.clear()
        return out


def test_label_index_item_selector_and_parent_changes() -> None:
    ev = Events()
    idx = LabelIndex(ev.started, ev.stopped)
    idx.update_selector("s1", parse_selector("app == 'web'"))
    idx.update_selector("s2", parse_selector("pcns.team == 'blue'"))
    idx.update_item("e1", {"app": "web"}, ["kns.a"])
    assert ev.take() == {("+", "s1", "e1")}
    idx.update_parent_labels("kns.a", {"pcns.team": "blue"})
    assert ev.take() == {("+", "s2", "e1")}
    # Own labels win over profile labels.
    idx.update_item("e1", {"app": "web", "pcns.team": "red"}, ["kns.a"])
    assert ev.take() == {("-", "s2", "e1")}
    idx.update_selector("s1", parse_selector("app == 'db'"))
    assert ev.take() == {("-", "s1", "e1")}
    idx.update_item("e2", {"app": "db"}, [])
    assert ev.take() == {("+", "s1", "e2")}
    idx.delete_item("e2")
    assert ev.take() == {("-", "s1", "e2")}
    idx.delete_selector("s1")
    assert ev.take() == set()
    assert idx.matches("s2") == frozenset()


def test_label_index_earlier_parent_wins() -> None:
    ev = Events()
    idx = LabelIndex(ev.started, ev.stopped)
    idx.update_parent_labels("p1", {"k": "one"})
    idx.update_parent_labels("p2", {"k": "two"})
    idx.update_item("e", {}, ["p1", "p2"])
    assert idx.labels("e") == {"k": "one"}
    idx.delete_parent("p1")
    assert idx.labels("e") == {"k": "two"}


def test_label_index_work_is_bounded_by_the_event() -> None:
    """Selectors with a top-level ``k == v`` are evaluated only against items
    carrying that label (and the items they matched before)."""
    calls = 0

    class Counting:
        def __init__(self, text: str) -> None:
            self.sel = parse_selector(text)
            self.root = self.sel.root

        def evaluate(self, labels: Any) -> bool:
            nonlocal calls
            calls += 1
            return self.sel.evaluate(labels)

        def __eq__(self, other: object) -> bool:
            return False

    ev = Events()
    idx = LabelIndex(ev.started, ev.stopped)
    for n in range(50):
        idx.update_item(f"e{n}", {"n": str(n), "all": "yes"}, [])
    for n in range(20):
        idx.update_selector(f"s{n}", Counting(f"n == '{n}' && all == 'yes'"))  # type: ignore[arg-type]
    idx.update_selector("neg", Counting("!has(missing)"))  # type: ignore[arg-type]
    ev.take()
    calls = 0
    idx.update_item("e7", {"n": "8", "all": "yes"}, [])
    assert calls == 3  # s8, s7 (matched before) and the unhinted selector
    assert ev.take() == {("-", "s7", "e7"), ("+", "s8", "e7")}
    calls = 0
    idx.update_selector("s3", Counting("n == '9'"))  # type: ignore[arg-type]
    assert calls == 2  # e9, and e3 which it matched before
    assert ev.take() == {("-", "s3", "e3"), ("+", "s3", "e9")}
    calls = 0
    idx.update_selector("neg", Counting("!has(n)"))  # type: ignore[arg-type]
    assert calls == 50
    assert len(ev.take()) == 50


# -- IP sets -----------------------------------------------------------------------------


class SetSink:
    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {}

    def ipset_added(self, set_id: str, members: frozenset[str]) -> None:
        self.sets[set_id] = set(members)

    def ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None:
        self.sets[set_id] -= removed
        self.sets[set_id] |= added

    def ipset_removed(self, set_id: str) -> None:
        del self.sets[set_id]


def test_ipsets_refcounts_and_shared_addresses() -> None:
    sink = SetSink()
    calc = IPSetCalculator(sink)
    calc.update_item("old", {"app": "web"}, [], ["10.0.0.1/32"])
    d = IPSetDef("s:web", selector=parse_selector("app == 'web'"))
    calc.ref(d)
    calc.ref(d)
    assert sink.sets["s:web"] == {"10.0.0.1/32"}
    # A new pod gets the same address before the old one is gone.
    calc.update_item("new", {"app": "web"}, [], ["10.0.0.1/32"])
    calc.delete_item("old")
    assert sink.sets["s:web"] == {"10.0.0.1/32"}
    calc.update_item("new", {"app": "web"}, [], ["10.0.0.2/32"])
    assert sink.sets["s:web"] == {"10.0.0.2/32"}
    calc.unref("s:web")
    assert "s:web" in sink.sets
    calc.unref("s:web")
    assert "s:web" not in sink.sets
    calc.ref(IPSetDef("n:x", nets=frozenset({"192.168.0.0/16"})))
    assert sink.sets["n:x"] == {"192.168.0.0/16"}


# -- resolver -----------------------------------------------------------------------------


def _policy(pid: str, order: float | None, tier: str = "default", types=("Ingress",), sel: str = "all()") -> ParsedPolicy:
    return ParsedPolicy(pid, tier, order, parse_selector(sel), frozenset(types), (), ())


def test_resolver_orders_tiers_and_policies() -> None:
    active: list[tuple[str, bool]] = []
    r = PolicyResolver(lambda pid, on: active.append((pid, on)))
    r.update_endpoint("ep", {"app": "web"}, ())
    r.update_policy(_policy("gnp/late", None))
    r.update_policy(_policy("gnp/b", 10))
    r.update_policy(_policy("gnp/a", 10))
    r.update_policy(_policy("gnp/first", 1, types=("Ingress", "Egress")))
    r.update_policy(_policy("gnp/sec", 5, tier="security"))
    r.update_policy(_policy("gnp/other", 1, sel="app == 'db'"))
    r.update_tier("security", 100, "Pass")
    res = r.resolve("ep")
    assert [t.name for t in res.ingress] == ["security", "default"]
    assert res.ingress[0].default_action == "Pass"
    assert res.ingress[1].policies == ("gnp/first", "gnp/a", "gnp/b", "gnp/late")
    assert [t.policies for t in res.egress] == [("gnp/first",)]
    assert ("gnp/other", True) not in active
    assert ("gnp/first", True) in active
    r.dirty.clear()
    r.update_tier("security", 2_000_000, "Deny")  # now after default
    assert r.dirty == {"ep"}
    assert [t.name for t in r.resolve("ep").ingress] == ["default", "security"]
    r.update_endpoint("ep", {"app": "db"}, ())
    assert ("gnp/other", True) in active
    r.delete_policy("gnp/first")
    assert ("gnp/first", False) in active


# -- graph ------------------------------------------------------------------------------------


class Sink(SetSink):
    def __init__(self) -> None:
        super().__init__()
        self.policies: dict[str, ParsedPolicy] = {}
        self.profiles: dict[str, ParsedProfile] = {}
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.pools: dict[str, Pool] = {}

    def policy_update(self, policy: ParsedPolicy) -> None:
        self.policies[policy.policy_id] = policy

    def policy_removed(self, policy_id: str) -> None:
        del self.policies[policy_id]

    def profile_update(self, profile: ParsedProfile) -> None:
        self.profiles[profile.profile_id] = profile

    def profile_removed(self, profile_id: str) -> None:
        del self.profiles[profile_id]

    def endpoint_update(self, endpoint: LocalEndpoint) -> None:
        self.endpoints[endpoint.endpoint_id] = endpoint

    def endpoint_removed(self, endpoint_id: str) -> None:
        del self.endpoints[endpoint_id]

    def pools_update(self, pools: dict[str, Pool]) -> None:
        self.pools = pools


def wep(ns: str, name: str, ip: str, labels: dict[str, str], node: str = NODE, iface: str = "") -> Update:
    value = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
             "metadata": {"name": name, "namespace": ns, "labels": labels},
             "spec": {"node": node, "orchestrator": "k8s", "pod": name, "endpoint": "eth0",
                      "interfaceName": iface or f"cali{name}"[:15], "ipNetworks": [f"{ip}/32"],
                      "profiles": [f"kns.{ns}"]}}
    return Update(ResourceKey("WorkloadEndpoint", name, ns), value, "1")


def profile(ns: str, labels: dict[str, str] | None = None) -> Update:
    return Update(ResourceKey("Profile", f"kns.{ns}"), {
        "apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": f"kns.{ns}"},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                 "labelsToApply": {"pcns.ns": ns, **(labels or {})}}}, "1")


def np(ns: str, name: str, spec: dict[str, Any]) -> Update:
    return Update(ResourceKey("NetworkPolicy", name, ns), {
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}, "1")


def test_graph_end_to_end() -> None:
    sink = Sink()
    g = CalcGraph(NODE, sink)
    g.on_updates([profile("x"), profile("y"), wep("x", "a", "10.0.0.1", {"app": "web"}),
                  wep("y", "b", "10.0.0.2", {"app": "client"}),
                  wep("y", "far", "10.0.9.9", {"app": "client"}, node="other")])
    g.flush()
    assert set(sink.endpoints) == {"x/a", "y/b"}
    assert sink.endpoints["x/a"].profiles == ("kns.x",)
    assert set(sink.profiles) == {"kns.x", "kns.y"}
    assert not sink.policies

    # A policy in y selecting app == 'web' selects nothing local (x/a is in x).
    g.on_updates([np("y", "p", {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]})])
    g.flush()
    assert not sink.policies

    rule = {"action": "Allow", "source": {"namespaceSelector": "ns == 'y'", "selector": "app == 'client'"}}
    g.on_updates([np("x", "web", {"selector": "app == 'web'", "ingress": [rule]})])
    g.flush()
    assert set(sink.policies) == {"np/x/web"}
    ep = sink.endpoints["x/a"]
    assert [t.policies for t in ep.ingress] == [("np/x/web",)] and ep.egress == ()
    src_set = sink.policies["np/x/web"].ingress[0].src_sets[0]
    # The namespaceSelector matches through the kns.y profile label; remote endpoints count too.
    assert sink.sets[src_set] == {"10.0.0.2/32", "10.0.9.9/32"}
    # Relabelling the namespace (its profile) updates the set.
    g.on_updates([Update(ResourceKey("Profile", "kns.y"), {
        "apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "kns.y"},
        "spec": {"labelsToApply": {"pcns.ns": "z"}}}, "2")])
    g.flush()
    assert sink.sets[src_set] == set()

    # Deleting the endpoint deactivates the policy and drops its sets.
    g.on_updates([Update(ResourceKey("WorkloadEndpoint", "a", "x"), None, "3")])
    g.flush()
    assert "x/a" not in sink.endpoints
    assert not sink.policies
    assert src_set not in sink.sets


def test_graph_ipsets_follow_namespace_labels_and_remote_endpoints() -> None:
    sink = Sink()
    g = CalcGraph(NODE, sink)
    g.on_updates([profile("x"), profile("y"), wep("x", "a", "10.0.0.1", {}),
                  wep("y", "b", "10.0.0.2", {}), wep("y", "far", "10.0.9.9", {}, node="other")])
    g.on_updates([np("x", "p", {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"namespaceSelector": "pcns.ns == 'y'"}}]})])
    g.flush()
    # namespaceSelector keys get the pcns. prefix: 'pcns.ns' -> label 'pcns.pcns.ns' (none).
    sid = sink.policies["np/x/p"].ingress[0].src_sets[0]
    assert sink.sets[sid] == set()
    g.on_updates([np("x", "p", {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}}]})])
    g.flush()
    sid = sink.policies["np/x/p"].ingress[0].src_sets[0]
    assert sink.sets[sid] == {"10.0.0.2/32", "10.0.9.9/32"}
    assert len(sink.sets) == 1  # the old set was released


def test_graph_profile_created_after_endpoint_and_pools() -> None:
    sink = Sink()
    g = CalcGraph(NODE, sink)
    g.on_updates([wep("x", "a", "10.0.0.1", {})])
    g.flush()
    assert sink.endpoints["x/a"].profiles == ()
    g.on_updates([profile("x")])
    g.flush()
    assert sink.endpoints["x/a"].profiles == ("kns.x",)
    g.on_updates([Update(ResourceKey("IPPool", "p"), {
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"},
        "spec": {"cidr": "10.0.0.0/16", "natOutgoing": True}}, "5")])
    g.flush()
    assert sink.pools == {"p": Pool("10.0.0.0/16", True, False)}


def test_graph_survives_an_invalid_resource() -> None:
    sink = Sink()
    g = CalcGraph(NODE, sink)
    g.on_updates([profile("x"), wep("x", "a", "10.0.0.1", {})])
    g.on_updates([np("x", "bad", {"selector": "this is not a selector"}),
                  np("x", "good", {"selector": "all()", "ingress": [{"action": "Deny"}]})])
    g.flush()
    assert set(sink.policies) == {"np/x/good"}


def test_graph_named_ports() -> None:
    sink = Sink()
    g = CalcGraph(NODE, sink)
    a = wep("x", "a", "10.0.0.1", {"app": "web"})
    assert a.value is not None
    a.value["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 8080},
                                {"name": "http", "protocol": "UDP", "port": 9999}]
    remote = wep("y", "r", "10.0.9.9", {"app": "web"}, node="other")
    assert remote.value is not None
    remote.value["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 80}]
    g.on_updates([profile("x"), a, remote, np("x", "p", {"selector": "all()", "ingress": [
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": [443, "http"]}}]})])
    g.flush()
    rule = sink.policies["np/x/p"].ingress[0]
    assert rule.dst_ports == ((443, 443),) and len(rule.dst_named_sets) == 1
    assert sink.sets[rule.dst_named_sets[0]] == {"10.0.0.1,8080", "10.0.9.9,80"}
    remote.value["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 81}]
    g.on_updates([remote])
    g.flush()
    assert sink.sets[rule.dst_named_sets[0]] == {"10.0.0.1,8080", "10.0.9.9,81"}


def test_graph_ignores_host_endpoint_only_policies() -> None:
    sink = Sink()
    g = CalcGraph(NODE, sink)
    g.on_updates([profile("x"), wep("x", "a", "10.0.0.1", {})])
    gnp = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "raw"},
           "spec": {"selector": "all()", "doNotTrack": True, "applyOnForward": True,
                    "ingress": [{"action": "Deny"}]}}
    g.on_updates([Update(ResourceKey("GlobalNetworkPolicy", "raw"), gnp, "2")])
    g.flush()
    assert not sink.policies and sink.endpoints["x/a"].ingress == ()


def _rule_selectors(spec: dict[str, Any], namespaced: bool = True) -> tuple[str | None, str | None]:
    kind = "NetworkPolicy" if namespaced else "GlobalNetworkPolicy"
    meta = {"name": "p", "namespace": "ns1"} if namespaced else {"name": "p"}
    pol = parse_policy(load_resource({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                                      "spec": {"ingress": [{"action": "Allow", "source": spec}]}}))
    rule = pol.ingress[0]
    sets = {d.set_id: d for d in pol.ipsets}
    pos = [sets[s].selector.canonical for s in rule.src_sets if sets[s].selector]  # type: ignore[union-attr]
    neg = [sets[s].selector.canonical for s in rule.src_not_sets if sets[s].selector]  # type: ignore[union-attr]
    return (pos[0] if pos else None), (neg[0] if neg else None)


def test_rule_selectors_follow_upstream() -> None:
    ns1 = 'projectcalico.org/namespace == "ns1"'
    assert _rule_selectors({"selector": "a == 'b'"}) == (f'({ns1} && a == "b")', None)
    # notSelector alone still confines a namespaced policy's rule to its namespace.
    assert _rule_selectors({"notSelector": "a == 'b'"}) == (ns1, 'a == "b"')
    assert _rule_selectors({"namespaceSelector": "all()"}) == ("has(projectcalico.org/namespace)", None)
    assert _rule_selectors({"namespaceSelector": "global()"}, namespaced=False) == (
        "!has(projectcalico.org/namespace)", None)
    assert _rule_selectors({"namespaceSelector": "team == 'x'", "selector": "a == 'b'"}, namespaced=False) == (
        '(pcns.team == "x" && a == "b")', None)
    assert _rule_selectors({"selector": "a == 'b'"}, namespaced=False) == ('a == "b"', None)
    assert _rule_selectors({"nets": ["10.0.0.0/8"]}) == (None, None)
    pos, _ = _rule_selectors({"serviceAccounts": {"names": ["sa1"]}})
    assert pos == f'({ns1} && projectcalico.org/serviceaccount in {{"sa1"}})'
