"""Policy resolution: which policies apply to each local endpoint, in order.

A label index over the local endpoints holds one selector per policy. The
resolver keeps endpoint -> policies and policy -> endpoints, and marks an
endpoint dirty whenever its set of policies, one of their orders, tiers or
types, or a tier's order / default action changes. ``resolve`` produces the
per-direction tier list for one endpoint: tiers by (order, name), inside a
tier policies by (order, name) with unset orders last, only policies whose
``types`` include the direction.

A policy is *active* while it selects at least one local endpoint; the
``on_active`` callback reports each change so the graph can program (or
drop) its rules and IP sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Mapping

from felix.calc.labels import LabelIndex
from felix.calc.rules import ParsedPolicy

BUILTIN_TIERS: dict[str, tuple[float, str]] = {
    "kube-admin": (1_000.0, "Pass"),
    "default": (1_000_000.0, "Deny"),
    "kube-baseline": (10_000_000.0, "Pass"),
}

EndpointID = Hashable


@dataclass(frozen=True)
class TierPolicies:
    name: str
    default_action: str  # "Deny" | "Pass"
    policies: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedPolicies:
    ingress: tuple[TierPolicies, ...]
    egress: tuple[TierPolicies, ...]


class PolicyResolver:
    def __init__(self, on_active: Callable[[str, bool], None]) -> None:
        self._on_active = on_active
        self.index = LabelIndex(self._match_started, self._match_stopped)
        self.policies: dict[str, ParsedPolicy] = {}
        self._tiers: dict[str, tuple[float, str]] = {}
        self._ep_policies: dict[EndpointID, set[str]] = {}
        self._policy_eps: dict[str, set[EndpointID]] = {}
        self.dirty: set[EndpointID] = set()

    # -- inputs --------------------------------------------------------------------

    def update_policy(self, policy: ParsedPolicy) -> None:
        pid = policy.policy_id
        old = self.policies.get(pid)
        self.policies[pid] = policy
        if old is not None and (old.order, old.tier, old.types) != (policy.order, policy.tier, policy.types):
            self.dirty.update(self._policy_eps.get(pid, ()))
        self.index.update_selector(pid, policy.selector)

    def delete_policy(self, pid: str) -> None:
        if pid not in self.policies:
            return
        self.index.delete_selector(pid)  # reports matches stopped -> inactive
        del self.policies[pid]

    def update_tier(self, name: str, order: float | None, default_action: str | None) -> None:
        builtin = BUILTIN_TIERS.get(name)
        value = (
            order if order is not None else (builtin[0] if builtin else float("inf")),
            default_action or (builtin[1] if builtin else "Deny"),
        )
        if self._tiers.get(name) == value:
            return
        self._tiers[name] = value
        self._dirty_tier(name)

    def delete_tier(self, name: str) -> None:
        if self._tiers.pop(name, None) is not None:
            self._dirty_tier(name)

    def update_endpoint(self, ep: EndpointID, labels: Mapping[str, str], parents: tuple[str, ...]) -> None:
        self._ep_policies.setdefault(ep, set())
        self.index.update_item(ep, labels, parents)
        self.dirty.add(ep)

    def delete_endpoint(self, ep: EndpointID) -> None:
        self.index.delete_item(ep)
        self._ep_policies.pop(ep, None)
        self.dirty.discard(ep)

    def update_parent(self, parent_id: str, labels: Mapping[str, str] | None) -> None:
        self.index.update_parent_labels(parent_id, labels)

    # -- outputs ---------------------------------------------------------------------

    def endpoints_of(self, pid: str) -> frozenset[EndpointID]:
        return frozenset(self._policy_eps.get(pid, ()))

    def is_active(self, pid: str) -> bool:
        return bool(self._policy_eps.get(pid))

    def tier(self, name: str) -> tuple[float, str]:
        if name in self._tiers:
            return self._tiers[name]
        return BUILTIN_TIERS.get(name, (float("inf"), "Deny"))

    def resolve(self, ep: EndpointID) -> ResolvedPolicies:
        by_dir: dict[str, dict[str, list[ParsedPolicy]]] = {"Ingress": {}, "Egress": {}}
        for pid in self._ep_policies.get(ep, ()):
            pol = self.policies[pid]
            for direction in pol.types:
                if direction in by_dir:
                    by_dir[direction].setdefault(pol.tier, []).append(pol)

        def tiers(groups: dict[str, list[ParsedPolicy]]) -> tuple[TierPolicies, ...]:
            out = []
            for name in sorted(groups, key=lambda t: (self.tier(t)[0], t)):
                pols = sorted(groups[name], key=lambda p: p.sort_key)
                out.append(TierPolicies(name, self.tier(name)[1], tuple(p.policy_id for p in pols)))
            return tuple(out)

        return ResolvedPolicies(tiers(by_dir["Ingress"]), tiers(by_dir["Egress"]))

    # -- internals ------------------------------------------------------------------------

    def _dirty_tier(self, name: str) -> None:
        for pid, pol in self.policies.items():
            if pol.tier == name:
                self.dirty.update(self._policy_eps.get(pid, ()))

    def _match_started(self, pid: object, ep: EndpointID) -> None:
        pid = str(pid)
        self._ep_policies.setdefault(ep, set()).add(pid)
        eps = self._policy_eps.setdefault(pid, set())
        eps.add(ep)
        self.dirty.add(ep)
        if len(eps) == 1:
            self._on_active(pid, True)

    def _match_stopped(self, pid: object, ep: EndpointID) -> None:
        pid = str(pid)
        pols = self._ep_policies.get(ep)
        if pols is not None:
            pols.discard(pid)
            self.dirty.add(ep)
        eps = self._policy_eps.get(pid)
        if eps is not None:
            eps.discard(ep)
            if not eps:
                del self._policy_eps[pid]
                self._on_active(pid, False)
