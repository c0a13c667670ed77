"""Policy evaluation of one flow, from what Felix's calc graph computes.

Nothing here re-implements selector or policy resolution: for each node
involved, the resources go through a :class:`felix.calc.graph.CalcGraph`
(the same code a Felix on that node runs) into a :class:`NodeView`, which
records what the graph emits — local endpoints with their ordered tiers, the
parsed policy / profile rules and the IP-set members. :func:`evaluate_side`
then walks those in the order the data plane does (:mod:`felix.dataplane.render`):

* tiers in order; in a tier, policies in order; a policy's rules in order,
  the first matching Allow / Deny decides, Pass skips the rest of the tier,
  Log does not decide; a tier whose policies neither allowed nor passed the
  packet ends with its default action (Deny, or Pass to the next tier);
* then the endpoint's profiles (a Pass in a profile goes to the next one);
* nothing matched: deny.

A flow is the egress side of the source endpoint (on its node), then the
ingress side of the destination endpoint (on its node); an address that is
no workload endpoint has no side (nothing polices it here).

Staged policies (``Staged*`` kinds) are evaluated by applying them to the
resource set (``stagedAction`` Set adds / replaces the same-named policy,
Delete removes it) and evaluating again: the "would allow / would deny" verdict.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Iterable, Optional, Union

from datastore.keys import ResourceKey
from datastore.syncer import Update
from felix.calc.graph import CalcGraph, LocalEndpoint, Pool
from felix.calc.rules import PROTOCOL_NUMBERS, ParsedPolicy, ParsedProfile, ParsedRule, policy_id

INGRESS, EGRESS = "Ingress", "Egress"
PORT_PROTOCOLS = {6, 17, 132, 136}
STAGED_KINDS = ("StagedGlobalNetworkPolicy", "StagedNetworkPolicy", "StagedKubernetesNetworkPolicy")
STAGED_PREFIX = "staged:"
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_NUMBERS.items()}

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


# -- flows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    src_ip: str
    dst_ip: str
    protocol: int  # IANA number
    dst_port: Optional[int] = None
    src_port: Optional[int] = None  # unknown: rules on source ports do not match
    icmp_type: Optional[int] = None
    icmp_code: Optional[int] = None

    @cached_property
    def src_addr(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.src_ip)

    @cached_property
    def dst_addr(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.dst_ip)

    @property
    def version(self) -> int:
        return self.src_addr.version

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES.get(self.protocol, str(self.protocol))


def protocol_of(value: Union[str, int]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for name, number in PROTOCOL_NUMBERS.items():
        if name.lower() == str(value).lower():
            return number
    raise ValueError(f"unknown protocol {value!r}")


def make_flow(src_ip: str, dst_ip: str, protocol: Union[str, int], port: Optional[int] = None,
              src_port: Optional[int] = None) -> Flow:
    proto = protocol_of(protocol)
    if proto in (1, 58):  # ICMP: an echo request unless a type is given through ``port``
        return Flow(src_ip, dst_ip, proto, icmp_type=8 if proto == 1 and port is None else
                    (128 if port is None else port), icmp_code=0)
    return Flow(src_ip, dst_ip, proto, port, src_port)


# -- what the calc graph emits for one node ------------------------------------------------------


class NodeView:
    """A :class:`felix.calc.graph.DataplaneSink` that keeps what it is given."""

    def __init__(self) -> None:
        self.policies: dict[str, ParsedPolicy] = {}
        self.profiles: dict[str, ParsedProfile] = {}
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.members: dict[str, set[str]] = {}
        self._nets: dict[str, list[Network]] = {}

    def ipset_added(self, set_id: str, members: frozenset[str]) -> None:
        self.members[set_id] = set(members)
        self._nets.pop(set_id, None)

    def ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None:
        s = self.members.setdefault(set_id, set())
        s.difference_update(removed)
        s.update(added)
        self._nets.pop(set_id, None)

    def ipset_removed(self, set_id: str) -> None:
        self.members.pop(set_id, None)
        self._nets.pop(set_id, None)

    def policy_update(self, policy: ParsedPolicy) -> None:
        self.policies[policy.policy_id] = policy

    def policy_removed(self, policy_id: str) -> None:
        self.policies.pop(policy_id, None)

    def profile_update(self, profile: ParsedProfile) -> None:
        self.profiles[profile.profile_id] = profile

    def profile_removed(self, profile_id: str) -> None:
        self.profiles.pop(profile_id, None)

    def endpoint_update(self, endpoint: LocalEndpoint) -> None:
        self.endpoints[endpoint.endpoint_id] = endpoint

    def endpoint_removed(self, endpoint_id: str) -> None:
        self.endpoints.pop(endpoint_id, None)

    def pools_update(self, pools: dict[str, Pool]) -> None:
        pass

    # -- queries -------------------------------------------------------------------------

    def in_set(self, set_id: str, addr: Address) -> bool:
        nets = self._nets.get(set_id)
        if nets is None:
            nets = [_network(m) for m in self.members.get(set_id, ())]
            self._nets[set_id] = nets
        return any(addr.version == n.version and addr in n for n in nets)

    def in_port_set(self, set_id: str, addr: Address, port: Optional[int]) -> bool:
        if port is None:
            return False
        return f"{addr},{port}" in self.members.get(set_id, ())


def node_view(updates: Iterable[Update], hostname: str) -> NodeView:
    view = NodeView()
    graph = CalcGraph(hostname, view)
    graph.on_updates(list(updates))
    graph.flush()
    return view


# -- rule matching (the nft rule's semantics) ------------------------------------------------------


@lru_cache(maxsize=65536)
def _network(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


def _in_nets(addr: Address, nets: tuple[str, ...]) -> bool:
    for n in nets:
        net = _network(n)
        if net.version == addr.version and addr in net:
            return True
    return False


def _in_ranges(port: Optional[int], ranges: tuple[tuple[int, int], ...]) -> bool:
    return port is not None and any(lo <= port <= hi for lo, hi in ranges)


def rule_matches(rule: ParsedRule, flow: Flow, view: NodeView) -> bool:
    if rule.unsupported or flow.version not in rule.versions:
        return False
    if rule.protocol is not None and flow.protocol != rule.protocol:
        return False
    if rule.not_protocol is not None and flow.protocol == rule.not_protocol:
        return False
    if rule.icmp_type is not None or rule.not_icmp_type is not None:
        if flow.protocol not in (1, 58) or (flow.protocol == 1) != (flow.version == 4):
            return False
        if rule.icmp_type is not None and flow.icmp_type != rule.icmp_type:
            return False
        if rule.icmp_code is not None and flow.icmp_code != rule.icmp_code:
            return False
        if rule.not_icmp_type is not None and flow.icmp_type == rule.not_icmp_type and (
                rule.not_icmp_code is None or flow.icmp_code == rule.not_icmp_code):
            return False
    for ip, sets, not_sets, nets, not_nets in (
        (flow.src_addr, rule.src_sets, rule.src_not_sets, rule.src_nets, rule.src_not_nets),
        (flow.dst_addr, rule.dst_sets, rule.dst_not_sets, rule.dst_nets, rule.dst_not_nets),
    ):
        if any(not view.in_set(s, ip) for s in sets):
            return False
        if any(view.in_set(s, ip) for s in not_sets):
            return False
        if nets and not _in_nets(ip, nets):
            return False
        if not_nets and _in_nets(ip, not_nets):
            return False
    has_ports = flow.protocol in PORT_PROTOCOLS
    for ip, port, ports, not_ports, named, not_named in (
        (flow.src_addr, flow.src_port, rule.src_ports, rule.src_not_ports,
         rule.src_named_sets, rule.src_not_named_sets),
        (flow.dst_addr, flow.dst_port, rule.dst_ports, rule.dst_not_ports,
         rule.dst_named_sets, rule.dst_not_named_sets),
    ):
        if (ports or named or not_ports or not_named) and not has_ports:
            return False
        if _in_ranges(port, not_ports):
            return False
        if any(view.in_port_set(s, ip, port) for s in not_named):
            return False
        if (ports or named) and not (_in_ranges(port, ports)
                                     or any(view.in_port_set(s, ip, port) for s in named)):
            return False
    return True


# -- traces -----------------------------------------------------------------------------------


@dataclass
class Step:
    """One policy or profile considered, or an implicit verdict."""

    kind: str  # policy | profile | tier-default | no-match
    name: str  # policy id ("np/<ns>/<name>", "gnp/<name>"), profile, or tier
    tier: Optional[str]
    result: str  # Allow | Deny | Pass | no-match (the policy did not decide)
    rule: Optional[int] = None  # index of the deciding rule in the policy's rules for this direction
    logged: list[int] = field(default_factory=list)  # Log rules that matched
    staged: bool = False

    @property
    def decided(self) -> bool:
        return self.result in ("Allow", "Deny")

    def describe(self) -> str:
        what = {"policy": "policy", "profile": "profile", "tier-default": "end of tier",
                "no-match": "no policy or profile matched"}[self.kind]
        name = "" if self.kind == "no-match" else f" {self.name}"
        rule = f" rule {self.rule}" if self.rule is not None else ""
        return f"{what}{name}{rule}: {self.result}"


@dataclass
class SideResult:
    direction: str  # Ingress | Egress
    endpoint: str
    node: str
    verdict: str  # Allow | Deny
    steps: list[Step]

    @property
    def decider(self) -> Step:
        return self.steps[-1]


def _walk_rules(rules: tuple[ParsedRule, ...], flow: Flow, view: NodeView) -> tuple[Optional[int], list[int]]:
    logged = []
    for i, rule in enumerate(rules):
        if not rule_matches(rule, flow, view):
            continue
        if rule.action == "Log":
            logged.append(i)
            continue
        return i, logged
    return None, logged


def evaluate_side(view: NodeView, endpoint: LocalEndpoint, direction: str, flow: Flow, node: str = "",
                  staged_ids: frozenset[str] = frozenset()) -> SideResult:
    steps: list[Step] = []

    def done(verdict: str) -> SideResult:
        return SideResult(direction, endpoint.endpoint_id, node, verdict, steps)

    tiers = endpoint.ingress if direction == INGRESS else endpoint.egress
    for tier in tiers:
        passed = False
        for pid in tier.policies:
            policy = view.policies[pid]
            rules = policy.ingress if direction == INGRESS else policy.egress
            idx, logged = _walk_rules(rules, flow, view)
            result = rules[idx].action if idx is not None else "no-match"
            steps.append(Step("policy", pid, tier.name, result, idx, logged, pid in staged_ids))
            if result in ("Allow", "Deny"):
                return done(result)
            if result == "Pass":
                passed = True
                break
        if not passed and tier.default_action == "Deny":
            steps.append(Step("tier-default", tier.name, tier.name, "Deny"))
            return done("Deny")
    for prof in endpoint.profiles:
        profile = view.profiles[prof]
        rules = profile.ingress if direction == INGRESS else profile.egress
        idx, logged = _walk_rules(rules, flow, view)
        result = rules[idx].action if idx is not None else "no-match"
        steps.append(Step("profile", prof, None, result, idx, logged))
        if result in ("Allow", "Deny"):
            return done(result)
    steps.append(Step("no-match", "", None, "Deny"))
    return done("Deny")


# -- the cluster: endpoints, nodes, staged policies -------------------------------------------------


@dataclass(frozen=True)
class EndpointInfo:
    endpoint_id: str  # "<namespace>/<wep name>" (the calc graph's id)
    namespace: str
    pod: str
    node: str
    ips: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.pod}"


@dataclass
class Explanation:
    flow: Flow
    source: Optional[EndpointInfo]
    destination: Optional[EndpointInfo]
    egress: Optional[SideResult]
    ingress: Optional[SideResult]
    staged_egress: Optional[SideResult] = None
    staged_ingress: Optional[SideResult] = None
    has_staged: bool = False

    @property
    def verdict(self) -> str:
        return _verdict(self.egress, self.ingress)

    @property
    def staged_verdict(self) -> Optional[str]:
        if not self.has_staged:
            return None
        return _verdict(self.staged_egress, self.staged_ingress)

    @property
    def decider(self) -> Optional[tuple[str, Step]]:
        """(direction, step) that decided the final verdict."""
        return _decider(self.egress, self.ingress)

    @property
    def staged_decider(self) -> Optional[tuple[str, Step]]:
        return _decider(self.staged_egress, self.staged_ingress) if self.has_staged else None

    def to_dict(self) -> dict[str, Any]:
        def side(s: Optional[SideResult]) -> Optional[dict[str, Any]]:
            return None if s is None else asdict(s)

        def ep(e: Optional[EndpointInfo]) -> Optional[dict[str, Any]]:
            if e is None:
                return None
            return {"namespace": e.namespace, "pod": e.pod, "node": e.node, "endpoint": e.endpoint_id,
                    "ips": list(e.ips)}

        decider = self.decider
        out: dict[str, Any] = {
            "flow": {"source": self.flow.src_ip, "destination": self.flow.dst_ip,
                     "protocol": self.flow.protocol_name, "port": self.flow.dst_port,
                     **({"icmpType": self.flow.icmp_type} if self.flow.icmp_type is not None else {})},
            "source": ep(self.source),
            "destination": ep(self.destination),
            "egress": side(self.egress),
            "ingress": side(self.ingress),
            "verdict": self.verdict,
            "decidedBy": None if decider is None else {"direction": decider[0], **asdict(decider[1])},
        }
        if self.has_staged:
            sd = self.staged_decider
            out["staged"] = {
                "verdict": self.staged_verdict,
                "summary": f"would {self.staged_verdict.lower()}" if self.staged_verdict else None,
                "egress": side(self.staged_egress),
                "ingress": side(self.staged_ingress),
                "decidedBy": None if sd is None else {"direction": sd[0], **asdict(sd[1])},
            }
        return out


def _verdict(egress: Optional[SideResult], ingress: Optional[SideResult]) -> str:
    if egress is not None and egress.verdict == "Deny":
        return "Deny"
    if ingress is not None and ingress.verdict == "Deny":
        return "Deny"
    return "Allow"


def _decider(egress: Optional[SideResult], ingress: Optional[SideResult]) -> Optional[tuple[str, Step]]:
    if egress is not None and (egress.verdict == "Deny" or ingress is None):
        return EGRESS, egress.decider
    if ingress is not None:
        return INGRESS, ingress.decider
    return None


def _staged_to_enforced(resource: dict[str, Any]) -> tuple[str, str, Optional[str], Optional[dict[str, Any]]]:
    """A staged policy -> (enforced kind, name, namespace, resource or None for Delete)."""
    from felix.k8s_policy import network_policy

    kind = resource["kind"]
    meta = dict(resource.get("metadata") or {})
    spec = dict(resource.get("spec") or {})
    action = spec.pop("stagedAction", None) or "Set"
    ns = meta.get("namespace")
    if kind == "StagedKubernetesNetworkPolicy":
        converted = network_policy({"metadata": {"name": meta["name"], "namespace": ns}, "spec": spec})
        out_kind, name = "NetworkPolicy", converted["metadata"]["name"]
        value: Optional[dict[str, Any]] = converted
    else:
        out_kind = kind[len("Staged"):]
        name = meta["name"]
        value = {"apiVersion": "projectcalico.org/v3", "kind": out_kind,
                 "metadata": {k: v for k, v in meta.items() if k in ("name", "namespace", "labels")},
                 "spec": spec}
    if out_kind == "GlobalNetworkPolicy":
        ns = None
    return out_kind, name, ns, (None if action == "Delete" else value)


class Cluster:
    """Every resource of the datastore (dicts), with per-node calc-graph views."""

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        self.enforced: dict[ResourceKey, dict[str, Any]] = {}
        self.staged: list[dict[str, Any]] = []
        for r in resources:
            meta = r.get("metadata") or {}
            if r.get("kind") in STAGED_KINDS:
                self.staged.append(r)
                continue
            self.enforced[ResourceKey(r["kind"], meta["name"], meta.get("namespace"))] = r
        self._views: dict[tuple[str, bool], NodeView] = {}

    # -- endpoints -----------------------------------------------------------------------

    @cached_property
    def endpoints(self) -> list[EndpointInfo]:
        out = []
        for key, r in self.enforced.items():
            if key.kind != "WorkloadEndpoint":
                continue
            spec = r.get("spec") or {}
            ips = tuple(str(ipaddress.ip_interface(n).ip) for n in spec.get("ipNetworks") or ())
            labels = dict((r.get("metadata") or {}).get("labels") or {})
            out.append(EndpointInfo(f"{key.namespace}/{key.name}", key.namespace or "",
                                    spec.get("pod") or spec.get("workload") or key.name,
                                    spec.get("node") or "", ips, labels))
        return out

    def endpoint_by_ip(self, ip: str) -> Optional[EndpointInfo]:
        addr = str(ipaddress.ip_address(ip))
        return next((e for e in self.endpoints if addr in e.ips), None)

    def find_endpoint(self, ref: str) -> EndpointInfo:
        """``<namespace>/<pod>`` (or the WorkloadEndpoint name) -> endpoint."""
        ns, _, name = ref.partition("/")
        for e in self.endpoints:
            if e.namespace == ns and name in (e.pod, e.endpoint_id.split("/", 1)[1]):
                return e
        raise LookupError(f"no workload endpoint for {ref!r}")

    def resolve(self, ref: str) -> tuple[str, Optional[EndpointInfo]]:
        """An address or ``ns/pod`` -> (IP, endpoint or None)."""
        try:
            ip = str(ipaddress.ip_address(ref))
            return ip, self.endpoint_by_ip(ip)
        except ValueError:
            ep = self.find_endpoint(ref)
            if not ep.ips:
                raise LookupError(f"{ref} has no IP address") from None
            return ep.ips[0], ep

    # -- staged ---------------------------------------------------------------------------

    @cached_property
    def staged_resources(self) -> tuple[dict[ResourceKey, dict[str, Any]], frozenset[str]]:
        out = dict(self.enforced)
        ids = set()
        for r in self.staged:
            kind, name, ns, value = _staged_to_enforced(r)
            key = ResourceKey(kind, name, ns)
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
                ids.add(policy_id(kind, name, ns))
        return out, frozenset(ids)

    # -- views ----------------------------------------------------------------------------

    def view(self, node: str, staged: bool = False) -> NodeView:
        key = (node, staged)
        if key not in self._views:
            resources = self.staged_resources[0] if staged else self.enforced
            updates = [Update(k, v, "0") for k, v in resources.items()]
            self._views[key] = node_view(updates, node)
        return self._views[key]

    def side(self, ep: Optional[EndpointInfo], direction: str, flow: Flow, staged: bool = False) -> Optional[SideResult]:
        """One side of a flow (builds only that endpoint's node view)."""
        return self._side(ep, direction, flow, staged)

    def _side(self, ep: Optional[EndpointInfo], direction: str, flow: Flow, staged: bool) -> Optional[SideResult]:
        if ep is None:
            return None
        view = self.view(ep.node, staged)
        local = view.endpoints.get(ep.endpoint_id)
        if local is None:  # no interface yet: nothing is programmed for it
            return None
        ids = self.staged_resources[1] if staged else frozenset()
        return evaluate_side(view, local, direction, flow, ep.node, ids)

    def explain(self, flow: Flow) -> Explanation:
        src, dst = self.endpoint_by_ip(flow.src_ip), self.endpoint_by_ip(flow.dst_ip)
        out = Explanation(flow, src, dst, self._side(src, EGRESS, flow, False), self._side(dst, INGRESS, flow, False))
        if self.staged:
            out.has_staged = True
            out.staged_egress = self._side(src, EGRESS, flow, True)
            out.staged_ingress = self._side(dst, INGRESS, flow, True)
        return out
