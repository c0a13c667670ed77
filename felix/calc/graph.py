"""The calculation graph: datastore updates in, dataplane instructions out.

Wiring (upstream's calc graph, reduced to what this Felix programs):

* every WorkloadEndpoint and NetworkSet -> IP-set index (members = addresses);
* local WorkloadEndpoints (``spec.node`` == this host) -> policy resolver;
* Profiles -> label parents of both indexes (``labelsToApply``) and, while a
  local endpoint uses them, profile rules;
* (Global)NetworkPolicies -> policy resolver; while active (selecting a
  local endpoint) their rules are sent and their IP sets referenced;
* Tiers -> resolver ordering; IPPools -> NAT-outgoing sets.

Each update touches only what depends on it (see :mod:`felix.calc.labels`).
:meth:`CalcGraph.flush` ends a batch: it resolves the endpoints whose
policies changed and emits them, so a burst of updates costs one emission
per endpoint.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from datastore.keys import ResourceKey
from datastore.selector import NAMESPACE_LABEL
from datastore.syncer import Update
from felix.calc.ipsets import IPSetCalculator, IPSetSink
from felix.calc.policies import PolicyResolver, TierPolicies
from felix.calc.rules import ParsedPolicy, ParsedProfile, protocol_number, parse_policy, parse_profile

log = logging.getLogger(__name__)

ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAMESPACE_PROFILE_PREFIX = "kns."


@dataclass(frozen=True)
class LocalEndpoint:
    endpoint_id: str  # "<namespace>/<name>"
    iface: str
    ipv4: tuple[str, ...]  # bare addresses
    ipv6: tuple[str, ...]
    mac: Optional[str]
    profiles: tuple[str, ...]  # only profiles that exist
    ingress: tuple[TierPolicies, ...]
    egress: tuple[TierPolicies, ...]


@dataclass(frozen=True)
class Pool:
    cidr: str
    nat_outgoing: bool
    disabled: bool


class DataplaneSink(IPSetSink, Protocol):
    def policy_update(self, policy: ParsedPolicy) -> None: ...

    def policy_removed(self, policy_id: str) -> None: ...

    def profile_update(self, profile: ParsedProfile) -> None: ...

    def profile_removed(self, profile_id: str) -> None: ...

    def endpoint_update(self, endpoint: LocalEndpoint) -> None: ...

    def endpoint_removed(self, endpoint_id: str) -> None: ...

    def pools_update(self, pools: dict[str, Pool]) -> None: ...


@dataclass
class _Workload:
    iface: Optional[str]
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    mac: Optional[str]
    profiles: tuple[str, ...]
    labels: dict[str, str]


def _load(value: dict[str, Any]) -> Any:
    from datastore.models import load_resource

    return load_resource(value)


def _addresses(nets: Optional[list[str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4: list[str] = []
    v6: list[str] = []
    for n in nets or ():
        ip = ipaddress.ip_interface(n).ip
        (v4 if ip.version == 4 else v6).append(str(ip))
    return tuple(v4), tuple(v6)


class CalcGraph:
    def __init__(self, hostname: str, sink: DataplaneSink) -> None:
        self.hostname = hostname
        self._sink = sink
        self.ipsets = IPSetCalculator(sink)
        self.resolver = PolicyResolver(self._policy_active)
        self._local: dict[str, _Workload] = {}
        self._emitted_policies: dict[str, ParsedPolicy] = {}
        self._profiles: dict[str, ParsedProfile] = {}
        self._profile_users: dict[str, set[str]] = {}  # profile -> local endpoints
        self._emitted_profiles: dict[str, ParsedProfile] = {}
        self._emitted_endpoints: dict[str, LocalEndpoint] = {}
        self._pools: dict[str, Pool] = {}
        self._pools_dirty = False
        self._dirty_eps: set[str] = set()
        self.num_workloads = 0

    # -- public ------------------------------------------------------------------------

    @property
    def local_endpoint_count(self) -> int:
        return len(self._emitted_endpoints)

    @property
    def active_policy_count(self) -> int:
        return len(self._emitted_policies)

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            key = u.key
            if not isinstance(key, ResourceKey):
                continue
            handler = self._HANDLERS.get(key.kind)
            if handler is None:
                continue
            try:
                handler(self, key, u.value)
            except Exception:  # noqa: BLE001 - one bad resource must not stop the graph
                log.exception("failed to process %s; treating it as deleted", key)
                try:
                    handler(self, key, None)
                except Exception:  # noqa: BLE001
                    log.exception("failed to remove %s", key)

    def flush(self) -> None:
        """End of a batch: emit every endpoint whose programming changed."""
        dirty = self._dirty_eps | {str(e) for e in self.resolver.dirty}
        self._dirty_eps.clear()
        self.resolver.dirty.clear()
        for ep_id in sorted(dirty):
            wl = self._local.get(ep_id)
            if wl is None or not wl.iface:
                if self._emitted_endpoints.pop(ep_id, None) is not None:
                    self._sink.endpoint_removed(ep_id)
                continue
            resolved = self.resolver.resolve(ep_id)
            ep = LocalEndpoint(
                endpoint_id=ep_id,
                iface=wl.iface,
                ipv4=wl.ipv4,
                ipv6=wl.ipv6,
                mac=wl.mac,
                profiles=tuple(p for p in wl.profiles if p in self._profiles),
                ingress=resolved.ingress,
                egress=resolved.egress,
            )
            if self._emitted_endpoints.get(ep_id) != ep:
                self._emitted_endpoints[ep_id] = ep
                self._sink.endpoint_update(ep)
        if self._pools_dirty:
            self._pools_dirty = False
            self._sink.pools_update(dict(self._pools))

    # -- handlers -------------------------------------------------------------------------

    def _on_workload(self, key: ResourceKey, value: Optional[dict[str, Any]]) -> None:
        ep_id = f"{key.namespace}/{key.name}"
        if value is None:
            self.ipsets.delete_item(("wep", ep_id))
            if ep_id in self._local:
                self._remove_local(ep_id)
            return
        wep = _load(value)
        spec = wep.spec
        labels = dict(wep.metadata.labels or {})
        labels.setdefault(NAMESPACE_LABEL, key.namespace or "")
        if spec.orchestrator:
            labels.setdefault(ORCHESTRATOR_LABEL, spec.orchestrator)
        profiles = tuple(spec.profiles or ())
        v4, v6 = _addresses(spec.ip_networks)
        members = [f"{a}/32" for a in v4] + [f"{a}/128" for a in v6]
        ports = [(p.name, protocol_number(p.protocol), p.port) for p in spec.ports or () if p.name]
        self.ipsets.update_item(("wep", ep_id), labels, profiles, members, ports)
        if spec.node != self.hostname:
            if ep_id in self._local:
                self._remove_local(ep_id)
            return
        old = self._local.get(ep_id)
        wl = _Workload(spec.interface_name, v4, v6, spec.mac, profiles, labels)
        self._local[ep_id] = wl
        if old is None:
            self.num_workloads += 1
        old_profiles = old.profiles if old else ()
        for p in set(profiles) - set(old_profiles):
            self._profile_ref(p, ep_id)
        for p in set(old_profiles) - set(profiles):
            self._profile_unref(p, ep_id)
        self.resolver.update_endpoint(ep_id, labels, profiles)
        self._dirty_eps.add(ep_id)

    def _remove_local(self, ep_id: str) -> None:
        wl = self._local.pop(ep_id)
        self.num_workloads -= 1
        self.resolver.delete_endpoint(ep_id)
        for p in wl.profiles:
            self._profile_unref(p, ep_id)
        self._dirty_eps.add(ep_id)

    def _on_network_set(self, key: ResourceKey, value: Optional[dict[str, Any]]) -> None:
        item = ("netset", str(key))
        if value is None:
            self.ipsets.delete_item(item)
            return
        res = _load(value)
        labels = dict(res.metadata.labels or {})
        parents: tuple[str, ...] = ()
        if key.namespace:
            labels.setdefault(NAMESPACE_LABEL, key.namespace)
            parents = (NAMESPACE_PROFILE_PREFIX + key.namespace,)
        nets = [str(ipaddress.ip_network(n, strict=False)) for n in res.spec.nets or ()]
        self.ipsets.update_item(item, labels, parents, nets)

    def _on_policy(self, key: ResourceKey, value: Optional[dict[str, Any]]) -> None:
        from felix.calc.rules import policy_id

        pid = policy_id(key.kind, key.name, key.namespace)
        if value is None:
            self.resolver.delete_policy(pid)
            return
        resource = _load(value)
        spec = resource.spec
        if getattr(spec, "do_not_track", None) or getattr(spec, "pre_dnat", None):
            # Untracked and pre-DNAT policies apply to host endpoints only.
            self.resolver.delete_policy(pid)
            return
        policy = parse_policy(resource)
        self.resolver.update_policy(policy)
        emitted = self._emitted_policies.get(pid)
        if emitted is not None and emitted != policy:
            self._emit_policy(policy, emitted)

    def _on_profile(self, key: ResourceKey, value: Optional[dict[str, Any]]) -> None:
        name = key.name
        existed = name in self._profiles
        if value is None:
            self._profiles.pop(name, None)
            self.ipsets.update_parent(name, None)
            self.resolver.update_parent(name, None)
            if name in self._emitted_profiles:
                self._retract_profile(name)
            if existed:
                self._dirty_eps.update(self._profile_users.get(name, ()))
            return
        profile = parse_profile(_load(value))
        self._profiles[name] = profile
        self.ipsets.update_parent(name, profile.labels)
        self.resolver.update_parent(name, profile.labels)
        if self._profile_users.get(name):
            emitted = self._emitted_profiles.get(name)
            if emitted is None or emitted != profile:
                self._emit_profile(profile, emitted)
            if not existed:
                self._dirty_eps.update(self._profile_users[name])

    def _on_tier(self, key: ResourceKey, value: Optional[dict[str, Any]]) -> None:
        if value is None:
            self.resolver.delete_tier(key.name)
            return
        tier = _load(value)
        self.resolver.update_tier(key.name, tier.spec.order, tier.spec.default_action)

    def _on_pool(self, key: ResourceKey, value: Optional[dict[str, Any]]) -> None:
        if value is None:
            if self._pools.pop(key.name, None) is not None:
                self._pools_dirty = True
            return
        pool = _load(value)
        new = Pool(pool.spec.cidr, bool(pool.spec.nat_outgoing), bool(pool.spec.disabled))
        if self._pools.get(key.name) != new:
            self._pools[key.name] = new
            self._pools_dirty = True

    _HANDLERS = {
        "WorkloadEndpoint": _on_workload,
        "NetworkSet": _on_network_set,
        "GlobalNetworkSet": _on_network_set,
        "NetworkPolicy": _on_policy,
        "GlobalNetworkPolicy": _on_policy,
        "Profile": _on_profile,
        "Tier": _on_tier,
        "IPPool": _on_pool,
    }

    # -- active policies and profiles ---------------------------------------------------

    def _policy_active(self, pid: str, active: bool) -> None:
        if active:
            self._emit_policy(self.resolver.policies[pid], None)
            return
        emitted = self._emitted_policies.pop(pid, None)
        if emitted is not None:
            self._sink.policy_removed(pid)
            for d in emitted.ipsets:
                self.ipsets.unref(d.set_id)

    def _emit_policy(self, policy: ParsedPolicy, previous: Optional[ParsedPolicy]) -> None:
        for d in policy.ipsets:
            self.ipsets.ref(d)
        self._emitted_policies[policy.policy_id] = policy
        self._sink.policy_update(policy)
        for d in previous.ipsets if previous else ():
            self.ipsets.unref(d.set_id)

    def _profile_ref(self, name: str, ep_id: str) -> None:
        users = self._profile_users.setdefault(name, set())
        users.add(ep_id)
        if len(users) == 1 and name in self._profiles:
            self._emit_profile(self._profiles[name], None)

    def _profile_unref(self, name: str, ep_id: str) -> None:
        users = self._profile_users.get(name)
        if users is None:
            return
        users.discard(ep_id)
        if not users:
            del self._profile_users[name]
            if name in self._emitted_profiles:
                self._retract_profile(name)

    def _emit_profile(self, profile: ParsedProfile, previous: Optional[ParsedProfile]) -> None:
        for d in profile.ipsets:
            self.ipsets.ref(d)
        self._emitted_profiles[profile.profile_id] = profile
        self._sink.profile_update(profile)
        for d in previous.ipsets if previous else ():
            self.ipsets.unref(d.set_id)

    def _retract_profile(self, name: str) -> None:
        emitted = self._emitted_profiles.pop(name)
        self._sink.profile_removed(name)
        for d in emitted.ipsets:
            self.ipsets.unref(d.set_id)
