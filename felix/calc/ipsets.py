"""IP-set membership: which addresses each active selector / CIDR list holds.

Items are every workload endpoint in the cluster (not only local ones) and
every network set; their members are their addresses / CIDRs (for a
named-port set: "<ip>,<port>" for each of their ports with that name). Only sets that
an active policy or profile refers to are computed (``ref`` / ``unref``,
reference counted). Membership is kept with a count per member so two items
sharing an address (a pod being replaced) never remove it early. Changes go to
the sink as deltas.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Protocol

from felix.calc.labels import ItemID, LabelIndex
from felix.calc.rules import IPSetDef


class IPSetSink(Protocol):
    def ipset_added(self, set_id: str, members: frozenset[str]) -> None: ...

    def ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None: ...

    def ipset_removed(self, set_id: str) -> None: ...


class IPSetCalculator:
    def __init__(self, sink: IPSetSink) -> None:
        self._sink = sink
        self.index = LabelIndex(self._match_started, self._match_stopped)
        self._item_members: dict[ItemID, frozenset[str]] = {}
        self._item_ports: dict[ItemID, frozenset[tuple[str, int, int]]] = {}  # (name, protocol, port)
        self._refs: dict[str, int] = {}
        self._defs: dict[str, IPSetDef] = {}
        self._members: dict[str, dict[str, int]] = {}

    # -- sets ----------------------------------------------------------------------

    def ref(self, d: IPSetDef) -> None:
        count = self._refs.get(d.set_id, 0)
        self._refs[d.set_id] = count + 1
        if count:
            return
        self._defs[d.set_id] = d
        if d.selector is None:
            self._members[d.set_id] = {m: 1 for m in d.nets}
            self._sink.ipset_added(d.set_id, frozenset(d.nets))
            return
        self._members[d.set_id] = {}
        self._sink.ipset_added(d.set_id, frozenset())
        self.index.update_selector(d.set_id, d.selector)

    def unref(self, set_id: str) -> None:
        count = self._refs.get(set_id, 0)
        if count <= 1:
            self._refs.pop(set_id, None)
            d = self._defs.pop(set_id, None)
            if d is not None and d.selector is not None:
                self.index.delete_selector(set_id)
            self._members.pop(set_id, None)
            if d is not None:
                self._sink.ipset_removed(set_id)
            return
        self._refs[set_id] = count - 1

    def members(self, set_id: str) -> frozenset[str]:
        return frozenset(self._members.get(set_id, ()))

    @property
    def active_sets(self) -> list[str]:
        return list(self._refs)

    # -- items -----------------------------------------------------------------------

    def update_item(self, item_id: ItemID, labels: Mapping[str, str], parents: Iterable[str],
                    members: Iterable[str], ports: Iterable[tuple[str, int, int]] = ()) -> None:
        new, new_ports = frozenset(members), frozenset(ports)
        old, old_ports = self._item_members.get(item_id), self._item_ports.get(item_id, frozenset())
        if old is not None and (old, old_ports) != (new, new_ports):
            before = {sid: self._members_of(sid, item_id) for sid in self.index.item_matches(item_id)}
            self._item_members[item_id], self._item_ports[item_id] = new, new_ports
            for sid, was in before.items():
                now = self._members_of(sid, item_id)
                self._change(sid, now - was, was - now)
        self._item_members[item_id], self._item_ports[item_id] = new, new_ports
        self.index.update_item(item_id, labels, tuple(parents))

    def delete_item(self, item_id: ItemID) -> None:
        self.index.delete_item(item_id)
        self._item_members.pop(item_id, None)
        self._item_ports.pop(item_id, None)

    def _members_of(self, set_id: str, item_id: ItemID) -> frozenset[str]:
        """What one item contributes to a set: its addresses, or for a
        named-port set "<ip>,<port>" per address and matching port."""
        addresses = self._item_members.get(item_id, frozenset())
        d = self._defs.get(set_id)
        if d is None or d.named_port is None:
            return addresses
        protocol, name = d.named_port
        ports = [p for n, proto, p in self._item_ports.get(item_id, ()) if n == name and proto == protocol]
        return frozenset(f"{a.split('/')[0]},{p}" for a in addresses for p in ports)

    def update_parent(self, parent_id: str, labels: Mapping[str, str] | None) -> None:
        self.index.update_parent_labels(parent_id, labels)

    # -- internals ---------------------------------------------------------------------

    def _change(self, set_id: str, add: Iterable[str], remove: Iterable[str]) -> None:
        counts = self._members[set_id]
        added: set[str] = set()
        removed: set[str] = set()
        for m in add:
            n = counts.get(m, 0)
            counts[m] = n + 1
            if n == 0:
                added.add(m)
        for m in remove:
            n = counts.get(m, 0)
            if n <= 1:
                counts.pop(m, None)
                if n == 1:
                    removed.add(m)
            else:
                counts[m] = n - 1
        if added or removed:
            self._sink.ipset_delta(set_id, frozenset(added), frozenset(removed))

    def _match_started(self, set_id: object, item_id: ItemID) -> None:
        self._change(str(set_id), self._members_of(str(set_id), item_id), ())

    def _match_stopped(self, set_id: object, item_id: ItemID) -> None:
        if str(set_id) in self._members:
            self._change(str(set_id), (), self._members_of(str(set_id), item_id))
