"""What calicoctl knows per resource kind: the names an operator may type and
the ``ps``/``wide`` table columns (upstream ``calicoctl/resourcemgr``).

Column values are computed from the stored JSON document and printed the way
upstream's Go templates print them (``true``/``false``, ``<nil>`` for an unset
pointer, Go's float formatting, ``-`` placeholders where upstream has them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from datastore.kinds import KINDS, kind_info

Doc = dict[str, Any]


class Lookups:
    """Lazily fetched cluster values a column may need (the Node ASN column
    shows the global AS number in parentheses when the node has none)."""

    def __init__(self, as_number: Callable[[], str] | None = None) -> None:
        self._as_number = as_number
        self._as_cache: str | None = None

    def as_number(self) -> str:
        if self._as_cache is None:
            self._as_cache = self._as_number() if self._as_number else "64512"
        return self._as_cache


Column = Callable[[Doc, Lookups], str]


@dataclass(frozen=True)
class KindTable:
    kind: str
    aliases: tuple[str, ...]
    headings: tuple[str, ...]
    wide: tuple[str, ...]
    columns: dict[str, Column] = field(default_factory=dict)

    @property
    def namespaced(self) -> bool:
        return kind_info(self.kind).namespaced


# --------------------------------------------------------------------------
# Go-style value formatting.
# --------------------------------------------------------------------------


def go_bool(v: Any) -> str:
    return "true" if v else "false"


def go_float(v: float) -> str:
    """Go's ``%v`` for a float64 (``%g`` with the shortest digits): exponent
    form when the decimal exponent is < -4 or >= 6, so 1000000 prints ``1e+06``."""
    if v == 0:
        return "0"
    d = Decimal(repr(float(v))).normalize()
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    nd = len(digits)
    dp = nd + exponent  # position of the decimal point
    exp = dp - 1
    text_digits = "".join(str(x) for x in digits)
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mant = text_digits[0] + ("." + text_digits[1:] if nd > 1 else "")
        return f"{neg}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{text_digits}"
    if dp >= nd:
        return f"{neg}{text_digits}{'0' * (dp - nd)}"
    return f"{neg}{text_digits[:dp]}.{text_digits[dp:]}"


def go_value(v: Any) -> str:
    """A scalar as ``{{.Field}}`` prints it; ``None`` is an unset pointer."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return go_bool(v)
    if isinstance(v, float):
        return go_float(v)
    return str(v)


def join(items: Any, sep: str = ",", max_len: int = 0) -> str:
    """Upstream's ``join``/``joinAndTruncate`` template functions."""
    if items is None:
        return ""
    if isinstance(items, dict):
        items = sorted(f"{k}={v}" for k, v in items.items())
    elif not isinstance(items, list):
        items = [items]
    out = ""
    for i, item in enumerate(items):
        if i:
            out += sep
        out += _go_struct(item) if isinstance(item, dict) else str(item)
        if max_len > 0 and len(out) > max_len:
            return out[: max_len - 3] + "..."
    return out


def _go_struct(d: dict[str, Any]) -> str:
    return "{" + " ".join(str(v) for v in d.values()) + "}"


def _get(doc: Doc, *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _name(doc: Doc, _: Lookups) -> str:
    return str(_get(doc, "metadata", "name") or "")


def _namespace(doc: Doc, _: Lookups) -> str:
    return str(_get(doc, "metadata", "namespace") or "")


def _spec(*path: str, default: str = "") -> Column:
    def col(doc: Doc, _: Lookups) -> str:
        v = _get(doc, "spec", *path)
        return default if v is None or v == "" else go_value(v)

    return col


def _spec_bool(*path: str) -> Column:
    return lambda doc, _: go_bool(_get(doc, "spec", *path))


def _spec_ptr(*path: str) -> Column:
    return lambda doc, _: go_value(_get(doc, "spec", *path))


def _spec_order(doc: Doc, _: Lookups) -> str:
    v = _get(doc, "spec", "order")
    return "<nil>" if v is None else go_float(float(v))


def _spec_join(*path: str, max_len: int = 0) -> Column:
    return lambda doc, _: join(_get(doc, "spec", *path), ",", max_len)


def _dash_if_unset(*path: str) -> Column:
    def col(doc: Doc, _: Lookups) -> str:
        v = _get(doc, "spec", *path)
        return "-" if v is None else go_value(v)

    return col


def _bgp_peer_node(doc: Doc, _: Lookups) -> str:
    node = _get(doc, "spec", "node") or ""
    if node:
        return str(node)
    selector = _get(doc, "spec", "nodeSelector") or ""
    return str(selector) if selector else "(global)"


def _node_asn(doc: Doc, lookups: Lookups) -> str:
    bgp = _get(doc, "spec", "bgp")
    if not bgp:
        return ""
    asn = bgp.get("asNumber")
    return str(asn) if asn else f"({lookups.as_number()})"


def _node_addr(key: str) -> Column:
    def col(doc: Doc, _: Lookups) -> str:
        bgp = _get(doc, "spec", "bgp")
        return str(bgp.get(key) or "") if bgp else ""

    return col


def _wep_workload(doc: Doc, _: Lookups) -> str:
    return str(_get(doc, "spec", "workload") or _get(doc, "spec", "pod") or "")


def _wep_nats(doc: Doc, _: Lookups) -> str:
    nats = _get(doc, "spec", "ipNATs") or []
    return ",".join("{" + f"{n.get('internalIP', '')} {n.get('externalIP', '')}" + "}" for n in nats)


def _label_selector(doc: Doc, _: Lookups) -> str:
    """``{{.Spec.PodSelector}}``: a metav1.LabelSelector as its Go String() prints it."""
    sel = _get(doc, "spec", "podSelector") or {}
    labels = "".join(f"{k}: {v}," for k, v in sorted((sel.get("matchLabels") or {}).items()))
    exprs = "".join(
        "&LabelSelectorRequirement{" + f"Key:{e.get('key', '')},Operator:{e.get('operator', '')},"
        f"Values:[{' '.join(e.get('values') or [])}],}}," for e in sel.get("matchExpressions") or [])
    return f"&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"


def _table(kind: str, aliases: tuple[str, ...], headings: tuple[str, ...], wide: tuple[str, ...],
           columns: dict[str, Column]) -> KindTable:
    return KindTable(kind, aliases, headings, wide, {"NAME": _name, **columns})


TABLES: dict[str, KindTable] = {
    t.kind: t
    for t in (
        _table("IPPool", ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
               ("NAME", "CIDR", "SELECTOR"),
               ("NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"),
               {
                   "CIDR": _spec("cidr"),
                   "NAT": _spec_bool("natOutgoing"),
                   "IPIPMODE": _spec("ipipMode", default="Never"),
                   "VXLANMODE": _spec("vxlanMode", default="Never"),
                   "DISABLED": _spec_bool("disabled"),
                   "DISABLEBGPEXPORT": _spec_bool("disableBGPExport"),
                   "SELECTOR": _spec("nodeSelector"),
               }),
        _table("IPAMConfiguration", ("ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"),
               ("NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"),
               ("NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"),
               {
                   "STRICTAFFINITY": _spec_bool("strictAffinity"),
                   "AUTOALLOCATEBLOCKS": _spec_bool("autoAllocateBlocks"),
                   "MAXBLOCKSPERHOST": lambda d, _: str(_get(d, "spec", "maxBlocksPerHost") or 0),
               }),
        _table("Node", ("node", "nodes", "no", "nos"),
               ("NAME",), ("NAME", "ASN", "IPV4", "IPV6"),
               {"ASN": _node_asn, "IPV4": _node_addr("ipv4Address"), "IPV6": _node_addr("ipv6Address")}),
        _table("WorkloadEndpoint", ("workloadendpoint", "workloadendpoints", "wep", "weps"),
               ("WORKLOAD", "NODE", "NETWORKS", "INTERFACE"),
               ("NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"),
               {
                   "NAMESPACE": _namespace,
                   "NODE": _spec("node"),
                   "ORCHESTRATOR": _spec("orchestrator"),
                   "WORKLOAD": _wep_workload,
                   "NETWORKS": _spec_join("ipNetworks"),
                   "NATS": _wep_nats,
                   "PROFILES": _spec_join("profiles"),
                   "INTERFACE": _spec("interfaceName"),
               }),
        _table("HostEndpoint", ("hostendpoint", "hostendpoints", "hep", "heps"),
               ("NAME", "NODE"), ("NAME", "NODE", "INTERFACE", "IPS", "PROFILES"),
               {
                   "NODE": _spec("node"),
                   "INTERFACE": _spec("interfaceName"),
                   "IPS": _spec_join("expectedIPs"),
                   "PROFILES": _spec_join("profiles"),
               }),
        _table("NetworkPolicy",
               ("networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols"),
               ("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR"),
               {
                   "NAMESPACE": _namespace,
                   "ORDER": _spec_order,
                   "SELECTOR": _spec("selector"),
                   "TIER": _spec("tier"),
               }),
        _table("GlobalNetworkPolicy", ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
               ("NAME",), ("NAME", "ORDER", "SELECTOR"),
               {"ORDER": _spec_order, "SELECTOR": _spec("selector")}),
        # Staged policies: upstream's names and columns; wide adds STAGEDACTION (Set or Delete).
        _table("StagedNetworkPolicy",
               ("stagednetworkpolicy", "stagednetworkpolicies", "stagedpolicy", "snp", "snps", "stagedpolicies",
                "spol", "spols"),
               ("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR", "STAGEDACTION"),
               {
                   "NAMESPACE": _namespace,
                   "ORDER": _spec_order,
                   "SELECTOR": _spec("selector"),
                   "TIER": _spec("tier"),
                   "STAGEDACTION": _spec("stagedAction", default="Set"),
               }),
        _table("StagedGlobalNetworkPolicy",
               ("stagedglobalnetworkpolicy", "stagedglobalnetworkpolicies", "sgnp", "sgnps"),
               ("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR", "STAGEDACTION"),
               {"ORDER": _spec_order, "SELECTOR": _spec("selector"), "TIER": _spec("tier"),
                "STAGEDACTION": _spec("stagedAction", default="Set")}),
        _table("StagedKubernetesNetworkPolicy",
               ("stagedkubernetesnetworkpolicy", "stagedkubernetesnetworkpolicies", "stagedkubernetespolicy",
                "sknp", "sknps", "stagedkubernetespolicies", "skpol", "skpols"),
               ("NAME",), ("NAME", "PODSELECTOR", "STAGEDACTION"),
               {"NAMESPACE": _namespace, "PODSELECTOR": _label_selector,
                "STAGEDACTION": _spec("stagedAction", default="Set")}),
        _table("Profile", ("profile", "profiles", "pro", "pros"),
               ("NAME",), ("NAME", "LABELS"),
               {"LABELS": _spec_join("labelsToApply")}),
        _table("Tier", ("tier", "tiers"),
               ("NAME", "ORDER"), ("NAME", "ORDER"),
               {"ORDER": _spec_order}),
        _table("NetworkSet", ("networkset", "networksets", "netsets"),
               ("NAME",), ("NAME", "NETS"),
               {"NAMESPACE": _namespace, "NETS": _spec_join("nets", max_len=80)}),
        _table("GlobalNetworkSet", ("globalnetworkset", "globalnetworksets"),
               ("NAME",), ("NAME", "NETS"),
               {"NETS": _spec_join("nets", max_len=80)}),
        _table("BGPConfiguration", ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
               ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
               ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
               {
                   "LOGSEVERITY": _spec("logSeverityScreen"),
                   "MESHENABLED": _dash_if_unset("nodeToNodeMeshEnabled"),
                   "ASNUMBER": _dash_if_unset("asNumber"),
               }),
        _table("BGPPeer", ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
               ("NAME", "PEERIP", "NODE", "ASN"), ("NAME", "PEERIP", "NODE", "ASN"),
               {
                   "PEERIP": _spec("peerIP"),
                   "NODE": _bgp_peer_node,
                   "ASN": lambda d, _: str(_get(d, "spec", "asNumber") or 0),
               }),
        _table("FelixConfiguration", ("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
               ("NAME",), ("NAME",), {}),
        _table("ClusterInformation", ("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
               ("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),
               ("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),
               {
                   "CLUSTERGUID": _spec("clusterGUID"),
                   "CLUSTERTYPE": _spec("clusterType"),
                   "CALICOVERSION": _spec("calicoVersion"),
                   "DATASTOREREADY": _spec_ptr("datastoreReady"),
               }),
    )
    if t.kind in KINDS  # tables of kinds not registered (yet) are left out
}

_BY_ALIAS: dict[str, str] = {alias: t.kind for t in TABLES.values() for alias in t.aliases}
assert len(_BY_ALIAS) == sum(len(t.aliases) for t in TABLES.values()), "an alias names two kinds"

assert set(TABLES) == set(KINDS), "every registered kind needs a calicoctl table"


class UnknownKind(ValueError):
    pass


def resolve_kind(typed: str) -> str:
    """The kind for what an operator typed (case-insensitive, plurals, short names)."""
    kind = _BY_ALIAS.get(typed.lower())
    if kind is None:
        raise UnknownKind(f"resource type '{typed}' is not supported")
    return kind


def resource_list_text() -> str:
    """The ``Valid resource types are:`` list for help texts."""
    names = sorted(k[0].lower() + k[1:] if not k[:2].isupper() else _lower_acronym(k) for k in TABLES)
    return "\n".join(f"    * {n}" for n in names)


def _lower_acronym(kind: str) -> str:
    # IPPool -> ipPool, BGPPeer -> bgpPeer, IPAMConfiguration -> ipamConfiguration
    i = 0
    while i < len(kind) and kind[i].isupper():
        i += 1
    if i == len(kind):
        return kind.lower()
    return kind[: i - 1].lower() + kind[i - 1:]
