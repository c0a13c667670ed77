"""The nftables policy dataplane: calc-graph output -> one table of our own.

Layout of ``table inet <name>`` (upstream's table is ``calico``)::

  filter-FORWARD  hook forward:  iif/oif in @wl-ifaces -> wl-forward
                                 [unknown cali* iif/oif -> drop]
  filter-INPUT    hook input:    iif in @wl-ifaces -> wl-to-host
                                 [unknown cali* -> drop]
  nat-POSTROUTING hook postrouting (srcnat): natOutgoing masquerade
  wl-forward:   conntrack (below), clear marks,
                iifname vmap @from-wl-dispatch  (egress of the source workload)
                oifname vmap @to-wl-dispatch    (ingress of the destination)
                stamp the flow, accept
  wl-to-host:   conntrack, iifname vmap @from-wl-dispatch, then
                defaultEndpointToHostAction
  fw-<iface> / tw-<iface>   per endpoint: tiers -> policies -> profiles
  po-<policy> / pi-<policy> per active policy and direction
  pro-<profile> / pri-<profile>
  sets s4-/s6-<selector hash> (s4i-/s6i- once they hold CIDRs), p4-/p6-<hash>
  (named ports: address . port), n4-/n6-<hash>
  for CIDR lists longer than 8 (shorter ones are matched inline), wl-ifaces,
  all-ipam-pools, masq-ipam-pools (+ -v6)

Conntrack: related packets and packets of flows already allowed under the
current policy epoch are accepted first; INVALID is dropped. Every
transaction that changes policy bumps the epoch (kept in ``ct mark`` bits),
so the next original-direction packet of every established flow is checked
against the new policy once: still allowed -> re-stamped and the connection
survives; now denied -> dropped, the flow is cut. Reply-direction packets of
established flows are accepted (the original direction is re-checked).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from felix.calc.graph import LocalEndpoint, Pool
from felix.calc.rules import ParsedPolicy, ParsedProfile, ParsedRule, nets_set_id
from felix.dataplane import render
from felix.dataplane.nft import Nft
from felix.dataplane.table import SetType, Table

log = logging.getLogger(__name__)

EPOCH_SHIFT = 20
EPOCH_MASK = 0xFFF00000
EPOCH_MAX = EPOCH_MASK >> EPOCH_SHIFT

FORWARD_HOOK = "type filter hook forward priority filter; policy accept;"
INPUT_HOOK = "type filter hook input priority filter; policy accept;"
NAT_HOOK = "type nat hook postrouting priority srcnat; policy accept;"
DISPATCH_MAP = "type ifname : verdict;"
FROM_WL_MAP = "from-wl-dispatch"
TO_WL_MAP = "to-wl-dispatch"
WL_IFACES = "wl-ifaces"
V4, V6 = SetType("ipv4_addr", interval=True), SetType("ipv6_addr", interval=True)
H4, H6 = SetType("ipv4_addr"), SetType("ipv6_addr")
P4, P6 = SetType("ipv4_addr . inet_service"), SetType("ipv6_addr . inet_service")
Owner = tuple[str, str]  # ("policy", id) | ("profile", id)


@dataclass
class DataplaneConfig:
    table: str = "calico"
    mark_mask: int = 0xFFFF0000
    interface_prefixes: tuple[str, ...] = ("cali",)
    endpoint_to_host_action: str = "DROP"  # DROP | ACCEPT | RETURN
    unknown_interface_action: str = "DROP"  # DROP | RETURN (pycalico)
    disable_conntrack_invalid_check: bool = False
    ipv6: bool = True
    log_prefix: str = "calico-packet"
    nat_outgoing_address: str = ""


def _elements(members: Iterable[str], version: int) -> list[str]:
    nets = [ipaddress.ip_network(m, strict=False) for m in members]
    nets = [n for n in nets if n.version == version]
    host_len = 32 if version == 4 else 128
    if any(n.prefixlen != host_len for n in nets):
        nets = list(ipaddress.collapse_addresses(nets))  # type: ignore[arg-type]
    return [str(n.network_address) if n.prefixlen == host_len else str(n) for n in nets]


def _is_host(member: str) -> bool:
    return member.endswith("/32") or member.endswith("/128") or "/" not in member


class _Namer:
    """Set names for rendering; records the named CIDR-list sets used."""

    def __init__(self, dp: "NftablesDataplane") -> None:
        self._dp = dp
        self.used: set[str] = set()

    def selector_set(self, set_id: str, version: int) -> str:
        return self._dp._selector_set_name(set_id, version)

    def nets_set(self, nets: tuple[str, ...], version: int) -> Optional[str]:
        if len(nets) <= render.INLINE_NETS_MAX:
            return None
        name = render.set_name(nets_set_id(nets), version)
        self._dp._ensure_net_set(name, nets, version)
        self.used.add(name)
        return name


class NftablesDataplane:
    """Implements :class:`felix.calc.graph.DataplaneSink`."""

    # Flow logs (felix.flowlogs.rules.RuleLogger): NFLOG on every deciding rule.
    rule_logger: Optional[Any] = None

    def __init__(self, config: DataplaneConfig, nft: Optional[Nft] = None) -> None:
        self.config = config
        self.marks = render.Marks.from_mask(config.mark_mask)
        self.table = Table(nft or Nft(), config.table)
        self._members: dict[str, set[str]] = {}
        self._set_names: dict[str, set[str]] = {}  # set id -> nft set names
        self._policy_chains: dict[str, set[str]] = {}
        self._policies: dict[str, ParsedPolicy] = {}
        self._profiles: dict[str, ParsedProfile] = {}
        self._interval: set[str] = set()  # selector sets holding CIDRs
        self._set_users: dict[str, set[Owner]] = {}  # selector set -> policies/profiles using it
        self._owner_nets: dict[Owner, set[str]] = {}  # named CIDR-list sets per policy/profile
        self._net_set_refs: dict[str, int] = {}
        self._endpoints: dict[str, LocalEndpoint] = {}
        self._epoch = 1
        self._policy_changed = False
        self._pools: dict[str, Pool] = {}
        self.versions = (4, 6) if config.ipv6 else (4,)
        self._install_base()
        self.pools_update({})

    # -- configuration -----------------------------------------------------------

    def reconfigure(self, config: DataplaneConfig) -> None:
        """Apply a changed config (table name and mark mask need a restart)."""
        self.config = config
        self._install_base()
        self.pools_update(self._pools)

    # -- IP sets -------------------------------------------------------------------------
    #
    # A selector set is a plain hash set of addresses while it only holds
    # host addresses (cheap for libnftables: adding an element to an interval
    # set makes it fetch the elements of every interval set in the table),
    # and becomes an interval set (``s4i-``) once a network set puts a CIDR in
    # it; the rules that refer to it are re-rendered in the same transaction.

    def ipset_added(self, set_id: str, members: frozenset[str]) -> None:
        self._members[set_id] = set(members)
        self._write_set(set_id)

    def ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None:
        current = self._members.setdefault(set_id, set())
        current.difference_update(removed)
        current.update(added)
        self._write_set(set_id)

    def ipset_removed(self, set_id: str) -> None:
        self._members.pop(set_id, None)
        self._interval.discard(set_id)
        for name in self._set_names.pop(set_id, set()):
            self.table.remove_set(name)
        self._policy_changed = True

    def _selector_set_name(self, set_id: str, version: int) -> str:
        return render.set_name(set_id, version, interval=set_id in self._interval)

    def _write_named_port_set(self, set_id: str) -> None:
        names: set[str] = set()
        for v in self.versions:
            name = render.set_name(set_id, v)
            names.add(name)
            elems = []
            for m in self._members[set_id]:
                ip, _, port = m.rpartition(",")
                if ipaddress.ip_address(ip).version == v:
                    elems.append(f"{ip} . {port}")
            self.table.set_set(name, P4 if v == 4 else P6, elems)
        self._set_names[set_id] = names
        self._policy_changed = True

    def _write_set(self, set_id: str) -> None:
        if set_id.startswith("p:"):
            self._write_named_port_set(set_id)
            return
        members = self._members[set_id]
        interval = any(not _is_host(m) for m in members)
        flipped = interval != (set_id in self._interval)
        if interval:
            self._interval.add(set_id)
        else:
            self._interval.discard(set_id)
        names: set[str] = set()
        for v in self.versions:
            name = self._selector_set_name(set_id, v)
            names.add(name)
            st = (V4 if v == 4 else V6) if interval else (H4 if v == 4 else H6)
            self.table.set_set(name, st, _elements(members, v))
        for gone in self._set_names.get(set_id, set()) - names:
            self.table.remove_set(gone)
        self._set_names[set_id] = names
        self._policy_changed = True
        if flipped:
            for owner in list(self._set_users.get(set_id, ())):
                self._rerender(owner)

    # -- policies and profiles --------------------------------------------------------------

    def _rules(self, owner: Owner, rules: Iterable[ParsedRule], in_profile: bool = False,
               direction: str = "", tier: Optional[str] = None) -> list[str]:
        enabled = set(self.versions)
        namer = _Namer(self)
        out: list[str] = []
        for index, r in enumerate(rules):
            if r.unsupported:
                log.warning("rule of %s not programmed (%s unsupported): %s", owner[1], r.unsupported, r)
                continue
            versions = tuple(v for v in r.versions if v in enabled)
            if versions != r.versions:
                if not versions:
                    continue
                r = dataclasses.replace(r, versions=versions)
            for sid in (*r.src_sets, *r.src_not_sets, *r.dst_sets, *r.dst_not_sets,
                        *r.src_named_sets, *r.src_not_named_sets, *r.dst_named_sets, *r.dst_not_named_sets):
                self._set_users.setdefault(sid, set()).add(owner)
            texts = render.render_rule(r, self.marks, self.config.log_prefix, in_profile, namer)
            if self.rule_logger is not None:
                texts = self.rule_logger.rule(owner, direction, index, r, tier, texts)
            out.extend(texts)
        self._owner_nets.setdefault(owner, set()).update(namer.used)
        return out

    def _forget_owner(self, owner: Owner) -> None:
        for users in self._set_users.values():
            users.discard(owner)
        for name in self._owner_nets.pop(owner, set()):
            self._net_set_refs[name] -= 1
            if not self._net_set_refs[name]:
                del self._net_set_refs[name]
                self.table.remove_set(name)

    def _ensure_net_set(self, name: str, nets: tuple[str, ...], version: int) -> None:
        if name not in self._net_set_refs:
            self._net_set_refs[name] = 0
            self.table.set_set(name, V4 if version == 4 else V6, _elements(nets, version))

    def _claim_nets(self, owner: Owner, before: set[str]) -> None:
        for name in self._owner_nets.get(owner, set()) - before:
            self._net_set_refs[name] += 1
        for name in before - self._owner_nets.get(owner, set()):
            self._net_set_refs[name] -= 1
            if not self._net_set_refs[name]:
                del self._net_set_refs[name]
                self.table.remove_set(name)

    def _rerender(self, owner: Owner) -> None:
        kind, ident = owner
        if kind == "policy" and ident in self._policies:
            self.policy_update(self._policies[ident])
        elif kind == "profile" and ident in self._profiles:
            self.profile_update(self._profiles[ident])

    def policy_update(self, policy: ParsedPolicy) -> None:
        owner: Owner = ("policy", policy.policy_id)
        before = self._owner_nets.pop(owner, set())
        for users in self._set_users.values():
            users.discard(owner)
        self._policies[policy.policy_id] = policy
        chains: set[str] = set()
        for direction, rules in ((render.INGRESS, policy.ingress), (render.EGRESS, policy.egress)):
            if direction not in policy.types:
                continue
            name = render.policy_chain(policy.policy_id, direction)
            chains.add(name)
            self.table.set_chain(name, self._rules(owner, rules, direction=direction, tier=policy.tier))
        self._claim_nets(owner, before)
        for gone in self._policy_chains.get(policy.policy_id, set()) - chains:
            self.table.remove_chain(gone)
        self._policy_chains[policy.policy_id] = chains
        self._policy_changed = True

    def policy_removed(self, policy_id: str) -> None:
        self._policies.pop(policy_id, None)
        for name in self._policy_chains.pop(policy_id, set()):
            self.table.remove_chain(name)
        self._forget_owner(("policy", policy_id))
        self._policy_changed = True

    def profile_update(self, profile: ParsedProfile) -> None:
        owner: Owner = ("profile", profile.profile_id)
        before = self._owner_nets.pop(owner, set())
        for users in self._set_users.values():
            users.discard(owner)
        self._profiles[profile.profile_id] = profile
        for direction, rules in ((render.INGRESS, profile.ingress), (render.EGRESS, profile.egress)):
            self.table.set_chain(render.profile_chain(profile.profile_id, direction),
                                 self._rules(owner, rules, in_profile=True, direction=direction))
        self._claim_nets(owner, before)
        self._policy_changed = True

    def profile_removed(self, profile_id: str) -> None:
        self._profiles.pop(profile_id, None)
        for direction in (render.INGRESS, render.EGRESS):
            self.table.remove_chain(render.profile_chain(profile_id, direction))
        self._forget_owner(("profile", profile_id))
        self._policy_changed = True

    # -- endpoints --------------------------------------------------------------------------

    def endpoint_update(self, ep: LocalEndpoint) -> None:
        old = self._endpoints.get(ep.endpoint_id)
        if old is not None and old.iface != ep.iface:
            self._remove_iface(old.iface)
        self._endpoints[ep.endpoint_id] = ep
        for direction, tiers in ((render.INGRESS, ep.ingress), (render.EGRESS, ep.egress)):
            chain = render.render_endpoint_chain(tiers, ep.profiles, direction, self.marks)
            if self.rule_logger is not None:
                chain = self.rule_logger.endpoint_chain(direction, tiers, chain)
            self.table.set_chain(render.endpoint_chain(ep.iface, direction), chain)
        self.table.set_map_entry(FROM_WL_MAP, ep.iface, f"jump {render.endpoint_chain(ep.iface, render.EGRESS)}")
        self.table.set_map_entry(TO_WL_MAP, ep.iface, f"jump {render.endpoint_chain(ep.iface, render.INGRESS)}")
        self._write_ifaces()
        self._policy_changed = True

    def endpoint_removed(self, endpoint_id: str) -> None:
        old = self._endpoints.pop(endpoint_id, None)
        if old is None:
            return
        if not any(e.iface == old.iface for e in self._endpoints.values()):
            self._remove_iface(old.iface)
        self._write_ifaces()
        self._policy_changed = True

    def _remove_iface(self, iface: str) -> None:
        self.table.set_map_entry(FROM_WL_MAP, iface, None)
        self.table.set_map_entry(TO_WL_MAP, iface, None)
        for direction in (render.INGRESS, render.EGRESS):
            self.table.remove_chain(render.endpoint_chain(iface, direction))

    def _write_ifaces(self) -> None:
        self.table.set_set(WL_IFACES, SetType("ifname"), {e.iface for e in self._endpoints.values()})

    @property
    def endpoints(self) -> dict[str, LocalEndpoint]:
        return self._endpoints

    # -- NAT ------------------------------------------------------------------------------------

    def pools_update(self, pools: dict[str, Pool]) -> None:
        self._pools = dict(pools)
        for v, suffix in ((4, ""), (6, "-v6")):
            if v not in self.versions:
                continue
            st = V4 if v == 4 else V6
            active = [p for p in pools.values() if ipaddress.ip_network(p.cidr).version == v]
            self.table.set_set(f"all-ipam-pools{suffix}", st, _elements((p.cidr for p in active), v))
            self.table.set_set(f"masq-ipam-pools{suffix}", st,
                               _elements((p.cidr for p in active if p.nat_outgoing and not p.disabled), v))
        rules = []
        for v, suffix in ((4, ""), (6, "-v6")):
            if v not in self.versions:
                continue
            ip = "ip" if v == 4 else "ip6"
            action = "masquerade"
            if v == 4 and self.config.nat_outgoing_address:
                action = f"snat ip to {self.config.nat_outgoing_address}"
            rules.append(f"{ip} saddr @masq-ipam-pools{suffix} {ip} daddr != @all-ipam-pools{suffix} {action}")
        self.table.set_chain("nat-POSTROUTING", rules, hook=NAT_HOOK)

    # -- base chains -------------------------------------------------------------------------------

    def _conntrack_rules(self) -> list[str]:
        stamp = self._epoch << EPOCH_SHIFT
        rules = [
            f"ct state established,related ct mark & {EPOCH_MASK:#010x} == {stamp:#010x} accept",
            "ct state related accept",
            "ct state established ct direction reply accept",
        ]
        if not self.config.disable_conntrack_invalid_check:
            rules.append("ct state invalid drop")
        return rules

    @property
    def _stamp(self) -> str:
        return (f"ct mark set ct mark & {~EPOCH_MASK & 0xFFFFFFFF:#010x} | "
                f"{self._epoch << EPOCH_SHIFT:#010x}")

    def _install_base(self) -> None:
        t = self.table
        t.set_map(FROM_WL_MAP, DISPATCH_MAP, t.map_elems.get(FROM_WL_MAP, {}))
        t.set_map(TO_WL_MAP, DISPATCH_MAP, t.map_elems.get(TO_WL_MAP, {}))
        if WL_IFACES not in t.sets:
            t.set_set(WL_IFACES, SetType("ifname"), ())
        fail_closed = self.config.unknown_interface_action.upper() == "DROP"
        forward = [f"iifname @{WL_IFACES} jump wl-forward", f"oifname @{WL_IFACES} jump wl-forward"]
        inp = [f"iifname @{WL_IFACES} goto wl-to-host"]
        if fail_closed:
            for prefix in self.config.interface_prefixes:
                forward += [f'iifname "{prefix}*" drop', f'oifname "{prefix}*" drop']
                inp += [f'iifname "{prefix}*" drop']
        t.set_chain("filter-FORWARD", forward, hook=FORWARD_HOOK)
        t.set_chain("filter-INPUT", inp, hook=INPUT_HOOK)
        self._write_conntrack_chains()

    def _write_conntrack_chains(self) -> None:
        m = self.marks
        self.table.set_chain("wl-forward", [
            *self._conntrack_rules(),
            m.clear_both,
            f"iifname vmap @{FROM_WL_MAP}",
            f"oifname vmap @{TO_WL_MAP}",
            f"{self._stamp} accept",
        ])
        action = self.config.endpoint_to_host_action.upper()
        final = {"ACCEPT": f"{self._stamp} accept", "RETURN": f"{self._stamp} return"}.get(action, "drop")
        self.table.set_chain("wl-to-host", [
            *self._conntrack_rules(),
            m.clear_both,
            f"iifname vmap @{FROM_WL_MAP}",
            final,
        ])

    # -- apply ------------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self.table.dirty

    def apply(self) -> bool:
        """One transaction with everything that changed; True if one ran."""
        if self._policy_changed:
            self._policy_changed = False
            self._epoch = self._epoch % EPOCH_MAX + 1
            self._write_conntrack_chains()
        return self.table.apply()

    def verify(self) -> list[str]:
        return self.table.verify()

    def cleanup(self) -> None:
        self.table.delete()
