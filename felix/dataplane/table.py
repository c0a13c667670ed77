"""Desired vs programmed state of one nftables table, and the transactions
that move the kernel from one to the other.

The table holds chains (regular or base chains with a hook), sets and
verdict maps. Writers replace whole objects (a chain's rule list, a set's
elements, a map's entries); every replaced object is marked dirty. ``apply``
builds ONE nft script (one kernel transaction) containing only the dirty
objects, in an order the kernel accepts:

1. declare new sets, maps and chains (so jumps and map verdicts can refer to
   them in any order);
2. set elements (deltas, or flush + refill when the kernel's content is
   unknown); map entries (removed ones before chains disappear);
3. rewrite changed chains (flush + rules);
4. flush, then delete, chains that are gone; then delete gone maps and sets.

Every rule carries a comment that hashes (chain, position, text), so the
periodic ``verify`` can compare the kernel's table with what was programmed
from one JSON listing, and mark anything that drifted (flushed, edited,
deleted, added by someone else) for rewriting. A failed transaction marks the
whole table for a rewrite from scratch, done atomically: ``add table; delete
table; add table ...`` in one transaction, so working rules never disappear.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from felix.dataplane.nft import Nft, NftError

log = logging.getLogger(__name__)

ELEMENT_CHUNK = 1000
UNKNOWN: Any = object()  # programmed content unknown: rewrite it whole


@dataclass(frozen=True)
class SetType:
    type: str  # "ipv4_addr", "ipv6_addr", "ifname", "ipv4_addr . inet_service"
    interval: bool = False

    def declaration(self) -> str:
        flags = " flags interval;" if self.interval else ""
        return f"{{ type {self.type};{flags} }}"

    @property
    def is_ip(self) -> bool:
        return self.type in ("ipv4_addr", "ipv6_addr")

    def quote(self, element: str) -> str:
        return f'"{element}"' if self.type == "ifname" else element


def rule_comment(chain: str, index: int, rule: str) -> str:
    return hashlib.sha1(f"{chain}\0{index}\0{rule}".encode()).hexdigest()[:16]


def _quote_ifname(name: str) -> str:
    return f'"{name}"'


class Table:
    def __init__(self, nft: Nft, name: str, family: str = "inet") -> None:
        self.nft = nft
        self.name = name
        self.family = family
        self.ref = f"{family} {name}"
        # desired
        self.chains: dict[str, tuple[str, ...]] = {}
        self.hooks: dict[str, str] = {}  # base chain -> "type filter hook forward priority filter; policy accept;"
        self.sets: dict[str, SetType] = {}
        self.set_elems: dict[str, frozenset[str]] = {}
        self.maps: dict[str, str] = {}  # map -> "type ifname : verdict;"
        self.map_elems: dict[str, dict[str, str]] = {}
        # programmed (what we believe the kernel has)
        self._p_chains: dict[str, Any] = {}
        self._p_hooks: dict[str, str] = {}
        self._p_sets: dict[str, SetType] = {}
        self._p_set_elems: dict[str, Any] = {}
        self._p_maps: dict[str, str] = {}
        self._p_map_elems: dict[str, Any] = {}
        self._dirty_chains: set[str] = set()
        self._dirty_sets: set[str] = set()
        self._dirty_maps: set[str] = set()
        self.need_full_rewrite = True
        self.last_script = ""

    # -- writers ------------------------------------------------------------------

    def set_chain(self, name: str, rules: Iterable[str], hook: Optional[str] = None) -> None:
        rules = tuple(rules)
        if self.chains.get(name) == rules and self.hooks.get(name) == hook:
            return
        if name in self._p_chains and self._p_hooks.get(name) != hook:
            self.need_full_rewrite = True  # hooks cannot be changed in place
        self.chains[name] = rules
        if hook:
            self.hooks[name] = hook
        else:
            self.hooks.pop(name, None)
        self._dirty_chains.add(name)

    def remove_chain(self, name: str) -> None:
        if name in self.chains:
            del self.chains[name]
            self.hooks.pop(name, None)
            self._dirty_chains.add(name)

    def set_set(self, name: str, set_type: SetType, elements: Iterable[str]) -> None:
        elems = frozenset(elements)
        if self.sets.get(name) == set_type and self.set_elems.get(name) == elems:
            return
        self.sets[name] = set_type
        self.set_elems[name] = elems
        self._dirty_sets.add(name)

    def remove_set(self, name: str) -> None:
        if name in self.sets:
            del self.sets[name]
            del self.set_elems[name]
            self._dirty_sets.add(name)

    def set_map(self, name: str, declaration: str, elements: dict[str, str]) -> None:
        if self.maps.get(name) == declaration and self.map_elems.get(name) == elements:
            return
        self.maps[name] = declaration
        self.map_elems[name] = dict(elements)
        self._dirty_maps.add(name)

    def set_map_entry(self, name: str, key: str, verdict: Optional[str]) -> None:
        elems = self.map_elems.setdefault(name, {})
        if verdict is None:
            if key not in elems:
                return
            del elems[key]
        else:
            if elems.get(key) == verdict:
                return
            elems[key] = verdict
        self._dirty_maps.add(name)

    @property
    def dirty(self) -> bool:
        return bool(self.need_full_rewrite or self._dirty_chains or self._dirty_sets or self._dirty_maps)

    def mark_all_unknown(self) -> None:
        self.need_full_rewrite = True

    # -- apply ------------------------------------------------------------------------

    def apply(self) -> bool:
        """Program the pending changes; returns True if a transaction ran."""
        if not self.dirty:
            return False
        if self.need_full_rewrite:
            script = self._full_script()
            self.last_script = script
            self.nft.run(script)
            self._commit_all()
            return True
        script = self._incremental_script()
        self.last_script = script
        try:
            self.nft.run(script)
        except NftError:
            self.need_full_rewrite = True
            raise
        self._commit_dirty()
        return True

    def _elements(self, name: str, elems: Iterable[str], set_type: SetType) -> list[str]:
        items = sorted(elems)
        quote = set_type.quote
        return [
            f"add element {self.ref} {name} {{ {', '.join(quote(e) for e in items[i:i + ELEMENT_CHUNK])} }}"
            for i in range(0, len(items), ELEMENT_CHUNK)
        ]

    def _map_elements(self, name: str, elems: dict[str, str]) -> list[str]:
        items = sorted(elems.items())
        return [
            f"add element {self.ref} {name} {{ "
            + ", ".join(f"{_quote_ifname(k)} : {v}" for k, v in items[i:i + ELEMENT_CHUNK])
            + " }"
            for i in range(0, len(items), ELEMENT_CHUNK)
        ]

    def _chain_decl(self, name: str) -> str:
        hook = self.hooks.get(name)
        return f"add chain {self.ref} {name}" + (f" {{ {hook} }}" if hook else "")

    def _rules(self, name: str) -> list[str]:
        return [
            f'add rule {self.ref} {name} {rule} comment "{rule_comment(name, i, rule)}"'
            for i, rule in enumerate(self.chains[name])
        ]

    def _full_script(self) -> str:
        lines = [f"add table {self.ref}", f"delete table {self.ref}", f"add table {self.ref}"]
        for name, st in self.sets.items():
            lines.append(f"add set {self.ref} {name} {st.declaration()}")
            lines.extend(self._elements(name, self.set_elems[name], st))
        for name, decl in self.maps.items():
            lines.append(f"add map {self.ref} {name} {{ {decl} }}")
        # Regular chains first, base chains last: nothing hooks in until all is in place.
        ordered = sorted(self.chains, key=lambda c: c in self.hooks)
        for name in ordered:
            lines.append(self._chain_decl(name))
        for name in ordered:
            lines.extend(self._rules(name))
        for name, elems in self.map_elems.items():
            if name in self.maps:
                lines.extend(self._map_elements(name, elems))
        return "\n".join(lines) + "\n"

    def _incremental_script(self) -> str:
        lines = [f"add table {self.ref}"]
        ref = self.ref
        # 1. declarations
        for name in sorted(self._dirty_sets):
            if name in self.sets and self._p_sets.get(name) != self.sets[name]:
                if name in self._p_sets:  # type changed: recreate (rare)
                    lines.append(f"delete set {ref} {name}")
                lines.append(f"add set {ref} {name} {self.sets[name].declaration()}")
        for name in sorted(self._dirty_maps):
            if name in self.maps and name not in self._p_maps:
                lines.append(f"add map {ref} {name} {{ {self.maps[name]} }}")
        new_chains = [n for n in sorted(self._dirty_chains) if n in self.chains and n not in self._p_chains]
        for name in new_chains:
            lines.append(self._chain_decl(name))
        # 2. set elements and map entries
        for name in sorted(self._dirty_sets):
            if name not in self.sets:
                continue
            st = self.sets[name]
            want = self.set_elems[name]
            have = self._p_set_elems.get(name)
            if have is UNKNOWN or (have is not None and self._p_sets.get(name) != st):
                lines.append(f"flush set {ref} {name}")
                have = frozenset()
            elif have is None:
                have = frozenset()
            removed = have - want
            if removed:
                quote = st.quote
                items = sorted(removed)
                for i in range(0, len(items), ELEMENT_CHUNK):
                    lines.append(
                        f"delete element {ref} {name} {{ {', '.join(quote(e) for e in items[i:i + ELEMENT_CHUNK])} }}"
                    )
            added = want - have
            if added:
                lines.extend(self._elements(name, added, st))
        for name in sorted(self._dirty_maps):
            if name not in self.maps:
                continue
            want_m = self.map_elems.get(name, {})
            have_m = self._p_map_elems.get(name)
            if have_m is UNKNOWN:
                lines.append(f"flush map {ref} {name}")
                have_m = {}
            have_m = have_m or {}
            gone = sorted(k for k, v in have_m.items() if want_m.get(k) != v)
            if gone:
                lines.append(f"delete element {ref} {name} {{ {', '.join(_quote_ifname(k) for k in gone)} }}")
            fresh = {k: v for k, v in want_m.items() if have_m.get(k) != v}
            if fresh:
                lines.extend(self._map_elements(name, fresh))
        # 3. chain contents
        for name in sorted(self._dirty_chains):
            if name not in self.chains:
                continue
            if self._p_chains.get(name) == self.chains[name]:
                continue
            if name in self._p_chains:
                lines.append(f"flush chain {ref} {name}")
            lines.extend(self._rules(name))
        # 4. removals
        gone_chains = [n for n in sorted(self._dirty_chains) if n not in self.chains and n in self._p_chains]
        for name in gone_chains:
            lines.append(f"flush chain {ref} {name}")
        for name in sorted(self._dirty_maps):
            if name not in self.maps and name in self._p_maps:
                lines.append(f"delete map {ref} {name}")
        for name in gone_chains:
            lines.append(f"delete chain {ref} {name}")
        for name in sorted(self._dirty_sets):
            if name not in self.sets and name in self._p_sets:
                lines.append(f"delete set {ref} {name}")
        return "\n".join(lines) + "\n"

    def _commit_all(self) -> None:
        self._p_chains = dict(self.chains)
        self._p_hooks = dict(self.hooks)
        self._p_sets = dict(self.sets)
        self._p_set_elems = dict(self.set_elems)
        self._p_maps = dict(self.maps)
        self._p_map_elems = {k: dict(v) for k, v in self.map_elems.items()}
        self._dirty_chains.clear()
        self._dirty_sets.clear()
        self._dirty_maps.clear()
        self.need_full_rewrite = False

    def _commit_dirty(self) -> None:
        for name in self._dirty_chains:
            if name in self.chains:
                self._p_chains[name] = self.chains[name]
                if name in self.hooks:
                    self._p_hooks[name] = self.hooks[name]
            else:
                self._p_chains.pop(name, None)
                self._p_hooks.pop(name, None)
        for name in self._dirty_sets:
            if name in self.sets:
                self._p_sets[name] = self.sets[name]
                self._p_set_elems[name] = self.set_elems[name]
            else:
                self._p_sets.pop(name, None)
                self._p_set_elems.pop(name, None)
        for name in self._dirty_maps:
            if name in self.maps:
                self._p_maps[name] = self.maps[name]
                self._p_map_elems[name] = dict(self.map_elems.get(name, {}))
            else:
                self._p_maps.pop(name, None)
                self._p_map_elems.pop(name, None)
        self._dirty_chains.clear()
        self._dirty_sets.clear()
        self._dirty_maps.clear()

    # -- drift detection ---------------------------------------------------------------

    def verify(self) -> list[str]:
        """Compare the kernel's table with the programmed state; mark what
        drifted for rewriting. Returns a description of each difference."""
        if self.need_full_rewrite:
            return []
        listing = self.nft.list_json(f"table {self.ref}")
        if listing is None:
            self.need_full_rewrite = True
            return [f"table {self.ref} is missing"]
        k_chains: dict[str, list[str]] = {}
        k_hooks: dict[str, tuple[Any, ...]] = {}
        k_sets: dict[str, Any] = {}
        k_maps: dict[str, dict[str, str]] = {}
        for obj in listing.get("nftables", []):
            if "chain" in obj:
                c = obj["chain"]
                k_chains.setdefault(c["name"], [])
                if "hook" in c:
                    k_hooks[c["name"]] = (c.get("type"), c.get("hook"), c.get("prio"), c.get("policy"))
            elif "rule" in obj:
                r = obj["rule"]
                k_chains.setdefault(r["chain"], []).append(r.get("comment", ""))
            elif "set" in obj:
                s = obj["set"]
                k_sets[s["name"]] = s.get("elem", [])
            elif "map" in obj:
                m = obj["map"]
                k_maps[m["name"]] = _map_entries(m.get("elem", []))
        problems: list[str] = []
        for name in list(self._p_chains):
            rules = self._p_chains[name]
            expected = [rule_comment(name, i, r) for i, r in enumerate(rules)] if rules is not UNKNOWN else None
            if name not in k_chains:
                problems.append(f"chain {name} is missing")
                del self._p_chains[name]
                self._p_hooks.pop(name, None)
                if name in self.hooks:
                    self.need_full_rewrite = True
                self._dirty_chains.add(name)
            elif name in self.hooks and _hook_changed(self.hooks[name], k_hooks.get(name)):
                problems.append(f"base chain {name} was altered")
                self.need_full_rewrite = True
            elif expected is None or k_chains[name] != expected:
                problems.append(f"chain {name} has been modified")
                self._p_chains[name] = UNKNOWN
                self._dirty_chains.add(name)
        for name in k_chains:
            if name not in self._p_chains:
                problems.append(f"unexpected chain {name}")
                self._p_chains[name] = UNKNOWN
                self._dirty_chains.add(name)
        for name, st in list(self._p_sets.items()):
            if name not in k_sets:
                problems.append(f"set {name} is missing")
                del self._p_sets[name]
                self._p_set_elems.pop(name, None)
                self._dirty_sets.add(name)
                continue
            have = _normalize_elements(k_sets[name], st)
            want = _normalize_elements(list(self._p_set_elems.get(name) or ()), st)
            if have != want:
                problems.append(f"set {name} content differs")
                self._p_set_elems[name] = UNKNOWN
                self._dirty_sets.add(name)
        for name in k_sets:
            if name not in self._p_sets:
                problems.append(f"unexpected set {name}")
                self._p_sets[name] = SetType("unknown")
                self._p_set_elems[name] = UNKNOWN
                self._dirty_sets.add(name)
        for name in list(self._p_maps):
            if name not in k_maps:
                problems.append(f"map {name} is missing")
                del self._p_maps[name]
                self._p_map_elems.pop(name, None)
                self._dirty_maps.add(name)
            elif k_maps[name] != self._p_map_elems.get(name):
                problems.append(f"map {name} content differs")
                self._p_map_elems[name] = UNKNOWN
                self._dirty_maps.add(name)
        for name in k_maps:
            if name not in self._p_maps:
                problems.append(f"unexpected map {name}")
                self._p_maps[name] = "unknown"
                self._p_map_elems[name] = UNKNOWN
                self._dirty_maps.add(name)
        return problems

    def delete(self) -> None:
        """Remove the whole table from the kernel (shutdown with cleanup)."""
        self.nft.run(f"add table {self.ref}\ndelete table {self.ref}\n")
        self._p_chains.clear()
        self._p_sets.clear()
        self._p_maps.clear()
        self.need_full_rewrite = True


def _hook_changed(spec: str, kernel: Optional[tuple[Any, ...]]) -> bool:
    if kernel is None:
        return True
    words = spec.replace(";", " ").split()
    want_type = words[words.index("type") + 1]
    want_hook = words[words.index("hook") + 1]
    want_policy = words[words.index("policy") + 1] if "policy" in words else "accept"
    return (kernel[0], kernel[1], kernel[3] or "accept") != (want_type, want_hook, want_policy)


def _map_entries(elems: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in elems:
        if isinstance(e, list) and len(e) == 2:
            key, verdict = e
            if isinstance(verdict, dict):
                (kind, body), = verdict.items()
                target = body.get("target") if isinstance(body, dict) else None
                out[str(key)] = f"{kind} {target}" if target else kind
            else:
                out[str(key)] = str(verdict)
    return out


def _element_text(e: Any) -> str:
    if isinstance(e, dict) and "elem" in e:
        e = e["elem"].get("val", e)
    if isinstance(e, dict) and "concat" in e:
        return " . ".join(str(part) for part in e["concat"])
    return str(e)


def _normalize_elements(elems: list[Any], st: SetType) -> frozenset[str]:
    if not st.is_ip:
        return frozenset(_element_text(e) for e in elems)
    nets: list[Any] = []
    for e in elems:
        if isinstance(e, dict) and "elem" in e:
            e = e["elem"].get("val", e)
        if isinstance(e, str):
            nets.append(ipaddress.ip_network(e, strict=False))
        elif isinstance(e, dict) and "prefix" in e:
            p = e["prefix"]
            nets.append(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
        elif isinstance(e, dict) and "range" in e:
            lo, hi = e["range"]
            nets.extend(ipaddress.summarize_address_range(ipaddress.ip_address(lo), ipaddress.ip_address(hi)))
    return frozenset(str(n) for n in ipaddress.collapse_addresses(nets)) if nets else frozenset()
