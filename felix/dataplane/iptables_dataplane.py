"""The iptables policy data plane: calc-graph output -> ``cali-`` chains and
``cali40``/``cali60`` IP sets (same sink interface as the nftables one).

Layout (filter table, per IP version)::

  INPUT   -> cali-INPUT:   -i cali+ -> cali-wl-to-host
  FORWARD -> cali-FORWARD: -i/-o cali+ -> cali-wl-forward
  cali-wl-forward:         conntrack (below), clear marks,
                           -i cali+ -> cali-from-wl-dispatch (source's egress),
                           -o cali+ -> cali-to-wl-dispatch (destination's ingress),
                           accept mark -> stamp the flow, ACCEPT
  OUTPUT  -> cali-OUTPUT   (host endpoints: not implemented, empty)
  cali-from-wl-dispatch:   -i <iface> -g cali-fw-<iface> ...  [unknown cali* -> drop]
  cali-to-wl-dispatch:     -o <iface> -g cali-tw-<iface> ...
  cali-wl-to-host:         conntrack, from-wl dispatch (egress policy), then
                           defaultEndpointToHostAction
  cali-fw-/cali-tw-<iface> tiers -> cali-pi-/cali-po- policies,
                           profiles cali-pri-/cali-pro-, drop
  nat: POSTROUTING -> cali-POSTROUTING -> cali-nat-outgoing (MASQUERADE /
       SNAT from cali40masq-ipam-pools to outside cali40all-ipam-pools)

The jumps sit at the top of the built-in chains (``chainInsertMode``
Insert) or at their end (Append).

Conntrack, as in the nftables data plane: RELATED and flows already allowed
under the current policy epoch (``connmark`` bits 0xfff00000) are accepted
first, INVALID dropped; every batch that changes policy bumps the epoch
(rewriting only cali-wl-forward and cali-wl-to-host), so the next
original-direction packet of each established flow is checked against the
new policy once: still allowed -> re-stamped; now denied -> dropped.
"""
from __future__ import annotations

import ipaddress
import logging
import shutil
from typing import Iterable

from felix.calc.graph import LocalEndpoint, Pool
from felix.calc.rules import ParsedPolicy, ParsedProfile, ParsedRule, nets_set_id
from felix.dataplane import iptables_render as ir
from felix.dataplane.iptables import Hook, IptablesTables, cleanup_all
from felix.dataplane.ipsets import IpsetManager, SetSpec, destroy_all, set_name
from felix.dataplane.nftables import EPOCH_MASK, EPOCH_MAX, EPOCH_SHIFT, DataplaneConfig
from felix.dataplane.render import EGRESS, INGRESS, Marks

log = logging.getLogger(__name__)

Owner = tuple[str, str]
IPSET_PROTO = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}
FROM_WL, TO_WL, WL_TO_HOST = "cali-from-wl-dispatch", "cali-to-wl-dispatch", "cali-wl-to-host"
WL_FORWARD = "cali-wl-forward"
HOOKS = [Hook("filter", "INPUT", "cali-INPUT"), Hook("filter", "FORWARD", "cali-FORWARD"),
         Hook("filter", "OUTPUT", "cali-OUTPUT"), Hook("nat", "POSTROUTING", "cali-POSTROUTING")]


def _member(m: str) -> tuple[int, str]:
    net = ipaddress.ip_network(m, strict=False)
    host = net.prefixlen == net.max_prefixlen
    return net.version, str(net.network_address) if host else str(net)


class _Namer:
    def __init__(self, dp: "IptablesDataplane", owner: Owner) -> None:
        self._dp = dp
        self.owner = owner
        self.used: set[str] = set()

    def selector_set(self, set_id: str, version: int) -> str:
        return set_name(set_id, version)

    def nets_set(self, nets: tuple[str, ...], version: int) -> str:
        name = set_name(nets_set_id(nets), version)
        self._dp._nets_sets[name] = (nets, version)
        self.used.add(name)
        return name


class IptablesDataplane:
    """Implements :class:`felix.calc.graph.DataplaneSink` with iptables + ipset."""

    def __init__(self, config: DataplaneConfig, variant: str = "nft", insert_mode: str = "INSERT",
                 lock_timeout: float = 10.0) -> None:
        self.config = config
        self.variant = variant
        self.marks = ir.IptMarks(Marks.from_mask(config.mark_mask))
        self.versions = (4, 6) if config.ipv6 and shutil.which(f"ip6tables-{variant}-restore") else (4,)
        self.tables = {v: IptablesTables(variant, v, insert_mode, lock_timeout) for v in self.versions}
        self.ipsets = IpsetManager()
        self._members: dict[str, set[str]] = {}
        self._dirty_sets: set[str] = set()
        self._named_proto: dict[str, int] = {}
        self._policies: dict[str, ParsedPolicy] = {}
        self._profiles: dict[str, ParsedProfile] = {}
        self._policy_chains: dict[str, set[tuple[int, str]]] = {}
        self._owner_nets: dict[Owner, set[str]] = {}
        self._nets_sets: dict[str, tuple[tuple[str, ...], int]] = {}
        self._endpoints: dict[str, LocalEndpoint] = {}
        self._pools: dict[str, Pool] = {}
        self._epoch = 1
        self._policy_changed = False
        self._install_base()
        self.pools_update({})

    @property
    def backend(self) -> str:
        return f"iptables-{self.variant}"

    def reconfigure(self, config: DataplaneConfig) -> None:
        self.config = config
        self._install_base()
        for ep in list(self._endpoints.values()):
            self.endpoint_update(ep)
        self.pools_update(self._pools)

    # -- IP sets (written lazily at apply: named-port sets need the protocol) ---------

    def ipset_added(self, set_id: str, members: frozenset[str]) -> None:
        self._members[set_id] = set(members)
        self._dirty_sets.add(set_id)
        self._policy_changed = True

    def ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None:
        current = self._members.setdefault(set_id, set())
        current.difference_update(removed)
        current.update(added)
        self._dirty_sets.add(set_id)
        self._policy_changed = True

    def ipset_removed(self, set_id: str) -> None:
        self._members.pop(set_id, None)
        self._dirty_sets.discard(set_id)
        for v in (4, 6):
            self.ipsets.remove(set_name(set_id, v))
        self._policy_changed = True

    def _flush_sets(self) -> None:
        for sid in self._dirty_sets:
            members = self._members.get(sid)
            if members is None:
                continue
            per_v: dict[int, set[str]] = {4: set(), 6: set()}
            if sid.startswith("p:"):
                proto = IPSET_PROTO.get(self._named_proto.get(sid, 6), "tcp")
                for m in members:
                    ip, _, port = m.rpartition(",")
                    v, addr = _member(ip)
                    per_v[v].add(f"{addr},{proto}:{port}")
                kind = "hash:ip,port"
            else:
                for m in members:
                    v, addr = _member(m)
                    per_v[v].add(addr)
                kind = "hash:net"
            for v in self.versions:
                self.ipsets.set(set_name(sid, v), SetSpec(kind, v), per_v[v])
        self._dirty_sets.clear()

    # -- policies and profiles ------------------------------------------------------------

    def _chain_rules(self, owner: Owner, rules: Iterable[ParsedRule], version: int, namer: _Namer,
                     in_profile: bool = False) -> list[str]:
        out: list[str] = []
        for r in rules:
            if r.unsupported:
                log.warning("rule of %s not programmed (%s unsupported): %s", owner[1], r.unsupported, r)
                continue
            out.extend(ir.render_rule(r, version, self.marks, namer, self.config.log_prefix, in_profile))
        return out

    def _claim_nets(self, owner: Owner, used: set[str]) -> None:
        before = self._owner_nets.get(owner, set())
        self._owner_nets[owner] = used
        for name in used - before:
            nets, version = self._nets_sets[name]
            if version in self.versions:
                self.ipsets.set(name, SetSpec("hash:net", version), (_member(n)[1] for n in nets))
        still = set().union(*self._owner_nets.values()) if self._owner_nets else set()
        for name in before - used:
            if name not in still:
                self.ipsets.remove(name)
                self._nets_sets.pop(name, None)

    def _note_named(self, ipsets: Iterable[object]) -> None:
        for d in ipsets:
            named = getattr(d, "named_port", None)
            if named is not None:
                self._named_proto[d.set_id] = named[0]  # type: ignore[attr-defined]
                if d.set_id in self._members:  # type: ignore[attr-defined]
                    self._dirty_sets.add(d.set_id)  # type: ignore[attr-defined]

    def policy_update(self, policy: ParsedPolicy) -> None:
        owner: Owner = ("policy", policy.policy_id)
        self._policies[policy.policy_id] = policy
        self._note_named(policy.ipsets)
        namer = _Namer(self, owner)
        chains: set[tuple[int, str]] = set()
        for direction, rules in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
            if direction not in policy.types:
                continue
            name = ir.policy_chain(policy.policy_id, direction)
            for v in self.versions:
                chains.add((v, name))
                self.tables[v].set_chain("filter", name, self._chain_rules(owner, rules, v, namer))
        self._claim_nets(owner, namer.used)
        for v, gone in self._policy_chains.get(policy.policy_id, set()) - chains:
            self.tables[v].remove_chain("filter", gone)
        self._policy_chains[policy.policy_id] = chains
        self._policy_changed = True

    def policy_removed(self, policy_id: str) -> None:
        self._policies.pop(policy_id, None)
        for v, name in self._policy_chains.pop(policy_id, set()):
            self.tables[v].remove_chain("filter", name)
        self._claim_nets(("policy", policy_id), set())
        self._policy_changed = True
        self._owner_nets.pop(("policy", policy_id), None)

    def profile_update(self, profile: ParsedProfile) -> None:
        owner: Owner = ("profile", profile.profile_id)
        self._profiles[profile.profile_id] = profile
        self._note_named(profile.ipsets)
        namer = _Namer(self, owner)
        for direction, rules in ((INGRESS, profile.ingress), (EGRESS, profile.egress)):
            name = ir.profile_chain(profile.profile_id, direction)
            for v in self.versions:
                self.tables[v].set_chain("filter", name, self._chain_rules(owner, rules, v, namer, True))
        self._claim_nets(owner, namer.used)
        self._policy_changed = True

    def profile_removed(self, profile_id: str) -> None:
        self._profiles.pop(profile_id, None)
        for direction in (INGRESS, EGRESS):
            for v in self.versions:
                self.tables[v].remove_chain("filter", ir.profile_chain(profile_id, direction))
        self._claim_nets(("profile", profile_id), set())
        self._policy_changed = True
        self._owner_nets.pop(("profile", profile_id), None)

    # -- endpoints --------------------------------------------------------------------------

    @property
    def _stamp(self) -> str:
        return f"-j CONNMARK --set-xmark {self._epoch << EPOCH_SHIFT:#x}/{EPOCH_MASK:#x}"

    def _conntrack(self) -> list[str]:
        rules = [
            f"-m conntrack --ctstate RELATED,ESTABLISHED -m connmark --mark "
            f"{self._epoch << EPOCH_SHIFT:#x}/{EPOCH_MASK:#x} -j ACCEPT",
            "-m conntrack --ctstate RELATED -j ACCEPT",
            "-m conntrack --ctstate ESTABLISHED --ctdir REPLY -j ACCEPT",
        ]
        if not self.config.disable_conntrack_invalid_check:
            rules.append("-m conntrack --ctstate INVALID -j DROP")
        return rules

    def _write_conntrack_chains(self) -> None:
        m = self.marks
        prefixes = self.config.interface_prefixes
        action = self.config.endpoint_to_host_action.upper()
        final = {"ACCEPT": [f"{m.if_accept} {self._stamp}", f"{m.if_accept} -j ACCEPT"],
                 "RETURN": [f"{m.if_accept} {self._stamp}", f"{m.if_accept} -j RETURN"]}.get(
                     action, [f"{m.if_accept} -j DROP"])
        for v in self.versions:
            t = self.tables[v]
            t.set_chain("filter", WL_FORWARD, [
                *self._conntrack(),
                m.clear_both,
                *(f"-i {p}+ -j {FROM_WL}" for p in prefixes),
                *(f"-o {p}+ -j {TO_WL}" for p in prefixes),
                f"{m.if_accept} {self._stamp}",
                f"{m.if_accept} -j ACCEPT",
            ])
            t.set_chain("filter", WL_TO_HOST, [*self._conntrack(), m.clear_both, f"-j {FROM_WL}", *final])

    def endpoint_update(self, ep: LocalEndpoint) -> None:
        old = self._endpoints.get(ep.endpoint_id)
        self._endpoints[ep.endpoint_id] = ep
        if old is not None and old.iface != ep.iface:
            self._remove_iface_chains(old.iface)
        for direction, tiers in ((INGRESS, ep.ingress), (EGRESS, ep.egress)):
            rules = ir.render_endpoint_chain(tiers, ep.profiles, direction, self.marks, [])
            for v in self.versions:
                self.tables[v].set_chain("filter", ir.endpoint_chain(ep.iface, direction), rules)
        self._write_dispatch()
        self._policy_changed = True

    def endpoint_removed(self, endpoint_id: str) -> None:
        old = self._endpoints.pop(endpoint_id, None)
        if old is None:
            return
        if not any(e.iface == old.iface for e in self._endpoints.values()):
            self._remove_iface_chains(old.iface)
        self._write_dispatch()
        self._policy_changed = True

    def _remove_iface_chains(self, iface: str) -> None:
        for direction in (INGRESS, EGRESS):
            for v in self.versions:
                self.tables[v].remove_chain("filter", ir.endpoint_chain(iface, direction))

    def _write_dispatch(self) -> None:
        ifaces = sorted({e.iface for e in self._endpoints.values()})
        fail_closed = self.config.unknown_interface_action.upper() == "DROP"
        from_wl = [f"-i {i} -g {ir.endpoint_chain(i, EGRESS)}" for i in ifaces]
        to_wl = [f"-o {i} -g {ir.endpoint_chain(i, INGRESS)}" for i in ifaces]
        if fail_closed:
            from_wl += [f"-i {p}+ -j DROP" for p in self.config.interface_prefixes]
            to_wl += [f"-o {p}+ -j DROP" for p in self.config.interface_prefixes]
        for v in self.versions:
            self.tables[v].set_chain("filter", FROM_WL, from_wl)
            self.tables[v].set_chain("filter", TO_WL, to_wl)

    @property
    def endpoints(self) -> dict[str, LocalEndpoint]:
        return self._endpoints

    # -- base chains and NAT -------------------------------------------------------------------

    def _install_base(self) -> None:
        prefixes = self.config.interface_prefixes
        for v in self.versions:
            t = self.tables[v]
            t.set_chain("filter", "cali-FORWARD", [
                *(f"-i {p}+ -g {WL_FORWARD}" for p in prefixes),
                *(f"-o {p}+ -g {WL_FORWARD}" for p in prefixes),
            ])
            t.set_chain("filter", "cali-INPUT", [f"-i {p}+ -g {WL_TO_HOST}" for p in prefixes])
            t.set_chain("filter", "cali-OUTPUT", [])
            t.set_chain("nat", "cali-POSTROUTING", ["-j cali-nat-outgoing"])
            t.set_hooks(HOOKS)
        self._write_conntrack_chains()
        self._write_dispatch()

    def pools_update(self, pools: dict[str, Pool]) -> None:
        self._pools = dict(pools)
        for v in self.versions:
            active = [p for p in pools.values() if ipaddress.ip_network(p.cidr).version == v]
            all_name, masq_name = f"cali{v}0all-ipam-pools", f"cali{v}0masq-ipam-pools"
            self.ipsets.set(all_name, SetSpec("hash:net", v), (p.cidr for p in active))
            self.ipsets.set(masq_name, SetSpec("hash:net", v),
                            (p.cidr for p in active if p.nat_outgoing and not p.disabled))
            target = "-j MASQUERADE"
            if v == 4 and self.config.nat_outgoing_address:
                target = f"-j SNAT --to-source {self.config.nat_outgoing_address}"
            self.tables[v].set_chain("nat", "cali-nat-outgoing", [
                f"-m set --match-set {masq_name} src -m set ! --match-set {all_name} dst {target}"])

    # -- apply -----------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return bool(self._dirty_sets or self.ipsets.dirty or any(t.dirty for t in self.tables.values()))

    def apply(self) -> bool:
        """IP sets first, then one iptables-restore per IP version, then set deletions."""
        if self._policy_changed:
            self._policy_changed = False
            self._epoch = self._epoch % EPOCH_MAX + 1
            self._write_conntrack_chains()
        self._flush_sets()
        ran = self.ipsets.apply_updates()
        for t in self.tables.values():
            ran = t.apply() or ran
        ran = self.ipsets.apply_deletions() or ran
        return ran

    def verify(self) -> list[str]:
        problems = self.ipsets.verify()
        for v, t in self.tables.items():
            problems += [f"v{v}: {p}" for p in t.verify()]
        return problems

    def cleanup(self) -> None:
        cleanup_all((self.variant,))
        destroy_all()


def remove_iptables_state(lock_timeout: float = 10.0) -> list[str]:
    """Back-end switch: remove our chains and jumps from both iptables
    variants, then our IP sets."""
    removed = cleanup_all(("legacy", "nft"), lock_timeout)
    try:
        removed += [f"ipset {n}" for n in destroy_all()]
    except Exception as exc:  # noqa: BLE001 - ipset missing or sets busy: report, carry on
        log.warning("could not remove IP sets: %s", exc)
    return removed


def remove_other_variant(variant: str, lock_timeout: float = 10.0) -> list[str]:
    other = "legacy" if variant == "nft" else "nft"
    return cleanup_all((other,), lock_timeout)


