"""Incremental matching of labelled items against selectors.

An item (a workload endpoint, a network set) has its own labels and a list
of parents (profiles) whose ``labelsToApply`` it inherits; its own labels win,
then earlier parents over later ones (upstream's label inheritance). The
index keeps, for every selector, the set of items it matches, and reports
each change as a match started / stopped callback. Work per event is bounded
by what the event touches:

* item added/changed: re-evaluate the selectors that could match it;
* selector added/changed: evaluate it against the items that could match;
* parent labels changed: re-evaluate the items of that parent only.

"Could match": a selector that requires ``k == "v"`` (or ``has(k)``) at its
top level (alone or in an ``&&``) is only evaluated against items carrying
that label, found through an index of items by label; other selectors are
evaluated against every item.
"""
from __future__ import annotations

from typing import Callable, Hashable, Iterable, Mapping

from datastore.selector import AndNode, EqNode, HasNode, Node, Selector

ItemID = Hashable
SelectorID = Hashable
MatchCallback = Callable[[SelectorID, ItemID], None]
Hint = tuple[str, "str | None"]  # (label, value) for k == v; (label, None) for has(k)


def selector_hint(node: Node) -> Hint | None:
    """A label every match must carry, if the selector's top level says so."""
    if isinstance(node, EqNode):
        return (node.label, node.value)
    if isinstance(node, HasNode):
        return (node.label, None)
    if isinstance(node, AndNode):
        hints = [h for h in (selector_hint(op) for op in node.operands) if h is not None]
        return next((h for h in hints if h[1] is not None), hints[0] if hints else None)
    return None


class LabelIndex:
    def __init__(self, on_match_started: MatchCallback, on_match_stopped: MatchCallback) -> None:
        self._started = on_match_started
        self._stopped = on_match_stopped
        self._items: dict[ItemID, tuple[dict[str, str], tuple[str, ...]]] = {}
        self._labels: dict[ItemID, dict[str, str]] = {}  # effective labels
        self._parents: dict[str, dict[str, str]] = {}
        self._parent_items: dict[str, set[ItemID]] = {}
        self._selectors: dict[SelectorID, Selector] = {}
        self._matches: dict[SelectorID, set[ItemID]] = {}
        self._item_matches: dict[ItemID, set[SelectorID]] = {}
        # label -> value -> items (effective labels)
        self._by_label: dict[str, dict[str, set[ItemID]]] = {}
        self._hints: dict[SelectorID, Hint | None] = {}
        self._sel_eq: dict[tuple[str, str], set[SelectorID]] = {}
        self._sel_has: dict[str, set[SelectorID]] = {}
        self._sel_any: set[SelectorID] = set()

    # -- queries -----------------------------------------------------------

    def matches(self, sel_id: SelectorID) -> frozenset[ItemID]:
        return frozenset(self._matches.get(sel_id, ()))

    def item_matches(self, item_id: ItemID) -> frozenset[SelectorID]:
        return frozenset(self._item_matches.get(item_id, ()))

    def labels(self, item_id: ItemID) -> Mapping[str, str] | None:
        return self._labels.get(item_id)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def item_ids(self) -> list[ItemID]:
        return list(self._items)

    @property
    def selector_ids(self) -> list[SelectorID]:
        return list(self._selectors)

    # -- selectors -----------------------------------------------------------

    def update_selector(self, sel_id: SelectorID, selector: Selector) -> None:
        old = self._selectors.get(sel_id)
        if old is not None and old == selector:
            return
        self._selectors[sel_id] = selector
        self._unregister_hint(sel_id)
        hint = selector_hint(selector.root)
        self._hints[sel_id] = hint
        if hint is None:
            self._sel_any.add(sel_id)
        elif hint[1] is None:
            self._sel_has.setdefault(hint[0], set()).add(sel_id)
        else:
            self._sel_eq.setdefault((hint[0], hint[1]), set()).add(sel_id)
        current = self._matches.setdefault(sel_id, set())
        candidates: Iterable[ItemID]
        if hint is None:
            candidates = list(self._labels)
        else:
            values = self._by_label.get(hint[0], {})
            if hint[1] is None:
                found: set[ItemID] = set()
                for items in values.values():
                    found |= items
            else:
                found = set(values.get(hint[1], ()))
            candidates = found | current
        for item_id in list(candidates):
            self._set_match(sel_id, item_id, selector.evaluate(self._labels[item_id]), current)

    def _unregister_hint(self, sel_id: SelectorID) -> None:
        hint = self._hints.pop(sel_id, None)
        self._sel_any.discard(sel_id)
        if hint is None:
            return
        bucket = self._sel_has.get(hint[0]) if hint[1] is None else self._sel_eq.get((hint[0], hint[1]))
        if bucket is not None:
            bucket.discard(sel_id)

    def delete_selector(self, sel_id: SelectorID) -> None:
        if self._selectors.pop(sel_id, None) is None:
            return
        self._unregister_hint(sel_id)
        for item_id in list(self._matches.get(sel_id, ())):
            self._set_match(sel_id, item_id, False, self._matches[sel_id])
        self._matches.pop(sel_id, None)

    # -- parents (profiles) -------------------------------------------------

    def update_parent_labels(self, parent_id: str, labels: Mapping[str, str] | None) -> None:
        new = dict(labels or {})
        if self._parents.get(parent_id) == new:
            return
        if new:
            self._parents[parent_id] = new
        else:
            self._parents.pop(parent_id, None)
        for item_id in list(self._parent_items.get(parent_id, ())):
            self._refresh_item(item_id)

    def delete_parent(self, parent_id: str) -> None:
        self.update_parent_labels(parent_id, None)

    # -- items ----------------------------------------------------------------

    def update_item(self, item_id: ItemID, labels: Mapping[str, str] | None,
                    parents: tuple[str, ...] | list[str] = ()) -> None:
        own = dict(labels or {})
        parent_tuple = tuple(parents)
        old = self._items.get(item_id)
        if old is not None and old == (own, parent_tuple):
            return
        if old is not None:
            for p in old[1]:
                if p not in parent_tuple:
                    members = self._parent_items.get(p)
                    if members is not None:
                        members.discard(item_id)
                        if not members:
                            del self._parent_items[p]
        for p in parent_tuple:
            self._parent_items.setdefault(p, set()).add(item_id)
        self._items[item_id] = (own, parent_tuple)
        self._refresh_item(item_id)

    def delete_item(self, item_id: ItemID) -> None:
        old = self._items.pop(item_id, None)
        if old is None:
            return
        for p in old[1]:
            members = self._parent_items.get(p)
            if members is not None:
                members.discard(item_id)
                if not members:
                    del self._parent_items[p]
        self._index_labels(item_id, self._labels.pop(item_id, None), None)
        for sel_id in list(self._item_matches.get(item_id, ())):
            self._set_match(sel_id, item_id, False, self._matches[sel_id])
        self._item_matches.pop(item_id, None)

    # -- internals -------------------------------------------------------------

    def _effective(self, item_id: ItemID) -> dict[str, str]:
        own, parents = self._items[item_id]
        if not parents:
            return own
        merged: dict[str, str] = {}
        for p in reversed(parents):
            merged.update(self._parents.get(p, {}))
        merged.update(own)
        return merged

    def _index_labels(self, item_id: ItemID, old: Mapping[str, str] | None,
                      new: Mapping[str, str] | None) -> None:
        for k, v in (old or {}).items():
            if new is not None and new.get(k) == v:
                continue
            values = self._by_label.get(k)
            if values is not None and v in values:
                values[v].discard(item_id)
                if not values[v]:
                    del values[v]
                if not values:
                    del self._by_label[k]
        for k, v in (new or {}).items():
            if old is not None and old.get(k) == v:
                continue
            self._by_label.setdefault(k, {}).setdefault(v, set()).add(item_id)

    def _candidate_selectors(self, labels: Mapping[str, str], item_id: ItemID) -> set[SelectorID]:
        out = set(self._sel_any)
        out |= self._item_matches.get(item_id, set())
        for k, v in labels.items():
            out |= self._sel_eq.get((k, v), set())
            out |= self._sel_has.get(k, set())
        return out

    def _refresh_item(self, item_id: ItemID) -> None:
        labels = self._effective(item_id)
        old = self._labels.get(item_id)
        if old == labels and item_id in self._item_matches:
            return
        self._labels[item_id] = labels
        self._index_labels(item_id, old, labels)
        self._item_matches.setdefault(item_id, set())
        for sel_id in self._candidate_selectors(labels, item_id):
            selector = self._selectors[sel_id]
            self._set_match(sel_id, item_id, selector.evaluate(labels), self._matches[sel_id])

    def _set_match(self, sel_id: SelectorID, item_id: ItemID, matched: bool,
                   current: set[ItemID]) -> None:
        if matched == (item_id in current):
            return
        if matched:
            current.add(item_id)
            self._item_matches.setdefault(item_id, set()).add(sel_id)
            self._started(sel_id, item_id)
        else:
            current.discard(item_id)
            self._item_matches.get(item_id, set()).discard(sel_id)
            self._stopped(sel_id, item_id)
