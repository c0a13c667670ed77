"""Kubernetes objects -> Calico resources, as upstream's KDD conversion does.

Pure functions over plain dicts (no client library):

* :func:`network_policy` — ``networking.k8s.io/v1`` NetworkPolicy -> Calico
  NetworkPolicy ``knp.default.<name>`` in tier ``default``, order 1000;
  pod selectors are ANDed with ``projectcalico.org/orchestrator == 'k8s'``;
  an empty namespaceSelector becomes ``all()``; ipBlock -> nets / notNets;
  a port without protocol is TCP, ``endPort`` makes a range; rules are one
  per (peer, protocol); no policyTypes -> Ingress, plus Egress when egress
  rules are present.
* :func:`namespace_profile` — Namespace -> Profile ``kns.<ns>`` (allow all
  both ways; ``labelsToApply`` = namespace labels prefixed ``pcns.`` plus
  ``pcns.projectcalico.org/name``).

(On the etcd datastore nothing performs these mappings automatically; the
Kubernetes datastore will use them.)
"""
from __future__ import annotations

from typing import Any, Optional

API_VERSION = "projectcalico.org/v3"
POLICY_ORDER = 1000.0
POLICY_PREFIX = "knp.default."
PROFILE_PREFIX = "kns."
NAMESPACE_LABEL_PREFIX = "pcns."
NAMESPACE_NAME_LABEL = "projectcalico.org/name"
K8S_PODS = "projectcalico.org/orchestrator == 'k8s'"


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def label_selector(sel: Optional[dict[str, Any]]) -> str:
    """A Kubernetes LabelSelector as a Calico selector ("" when it selects everything)."""
    parts: list[str] = []
    for key, value in sorted((sel or {}).get("matchLabels", {}).items()):
        parts.append(f"{key} == {_quote(str(value))}")
    for expr in (sel or {}).get("matchExpressions", []) or []:
        key, op = expr["key"], expr["operator"]
        values = ", ".join(_quote(str(v)) for v in sorted(expr.get("values") or []))
        if op == "In":
            parts.append(f"{key} in {{ {values} }}")
        elif op == "NotIn":
            parts.append(f"{key} not in {{ {values} }}")
        elif op == "Exists":
            parts.append(f"has({key})")
        elif op == "DoesNotExist":
            parts.append(f"! has({key})")
        else:
            raise ValueError(f"unknown label selector operator {op!r}")
    return " && ".join(parts)


def pod_selector(sel: Optional[dict[str, Any]]) -> str:
    inner = label_selector(sel)
    return f"{K8S_PODS} && {inner}" if inner else K8S_PODS


def namespace_selector(sel: Optional[dict[str, Any]]) -> str:
    return label_selector(sel) or "all()"


def _ports(ports: Optional[list[dict[str, Any]]]) -> list[tuple[Optional[str], list[Any]]]:
    """[(protocol, ports)] grouped by protocol; [(None, [])] means any."""
    if not ports:
        return [(None, [])]
    grouped: dict[str, list[Any]] = {}
    for p in ports:
        protocol = (p.get("protocol") or "TCP").upper()
        port = p.get("port")
        items = grouped.setdefault(protocol, [])
        if port is None:
            items.append(None)  # every port of this protocol
        elif p.get("endPort") is not None and isinstance(port, int):
            items.append(f"{port}:{p['endPort']}" if p["endPort"] != port else port)
        else:
            items.append(port)
    out = []
    for protocol in sorted(grouped):
        items = grouped[protocol]
        out.append((protocol, [] if None in items else items))
    return out


def _peer(peer: Optional[dict[str, Any]]) -> dict[str, Any]:
    if not peer:
        return {}
    entity: dict[str, Any] = {}
    block = peer.get("ipBlock")
    if block:
        entity["nets"] = [block["cidr"]]
        if block.get("except"):
            entity["notNets"] = list(block["except"])
        return entity
    pods = peer.get("podSelector")
    namespaces = peer.get("namespaceSelector")
    if namespaces is not None:
        entity["namespaceSelector"] = namespace_selector(namespaces)
        entity["selector"] = pod_selector(pods)
    elif pods is not None:
        entity["selector"] = pod_selector(pods)
    return entity


def _rules(peers: Optional[list[dict[str, Any]]], ports: Optional[list[dict[str, Any]]],
           ingress: bool) -> list[dict[str, Any]]:
    rules = []
    for peer in peers or [None]:
        entity = _peer(peer)
        for protocol, port_list in _ports(ports):
            rule: dict[str, Any] = {"action": "Allow"}
            if protocol:
                rule["protocol"] = protocol
            destination: dict[str, Any] = {} if ingress else dict(entity)
            source: dict[str, Any] = dict(entity) if ingress else {}
            if port_list:
                destination["ports"] = port_list
            rule["source"] = source
            rule["destination"] = destination
            rules.append(rule)
    return rules


def network_policy(k8s: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes NetworkPolicy (dict) as a Calico NetworkPolicy (dict)."""
    meta = k8s.get("metadata") or {}
    spec = k8s.get("spec") or {}
    ingress_rules = spec.get("ingress") or []
    egress_rules = spec.get("egress") or []
    types = list(spec.get("policyTypes") or [])
    if not types:
        types = ["Ingress"] + (["Egress"] if egress_rules else [])
    ingress = [r for rule in ingress_rules for r in _rules(rule.get("from"), rule.get("ports"), True)]
    egress = [r for rule in egress_rules for r in _rules(rule.get("to"), rule.get("ports"), False)]
    out_spec: dict[str, Any] = {
        "tier": "default",
        "order": POLICY_ORDER,
        "selector": pod_selector(spec.get("podSelector")),
        "types": types,
    }
    if "Ingress" in types:
        out_spec["ingress"] = ingress
    if "Egress" in types:
        out_spec["egress"] = egress
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_PREFIX + meta["name"], "namespace": meta.get("namespace") or "default"},
        "spec": out_spec,
    }


def namespace_profile(name: str, labels: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """The Profile ``kns.<name>`` for a Kubernetes Namespace."""
    apply = {NAMESPACE_LABEL_PREFIX + k: v for k, v in sorted((labels or {}).items())}
    apply[NAMESPACE_LABEL_PREFIX + NAMESPACE_NAME_LABEL] = name
    return {
        "apiVersion": API_VERSION,
        "kind": "Profile",
        "metadata": {"name": PROFILE_PREFIX + name},
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": apply,
        },
    }
