"""Kubernetes objects seen as Calico resources, as upstream's KDD converts them.

* Pod -> WorkloadEndpoint ``<node>-k8s-<pod>-eth0`` (one per pod)
* Namespace -> Profile ``kns.<namespace>``; ServiceAccount -> ``ksa.<ns>.<sa>``
* NetworkPolicy (networking.k8s.io) -> NetworkPolicy ``knp.default.<name>`` in
  tier ``default`` at order 1000
* Node -> Node (BGP/tunnel fields from ``projectcalico.org/*`` annotations)

Pure functions over JSON dicts: no I/O, unit-testable.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

V3 = "projectcalico.org/v3"

# Pod annotations written by the CNI plugin (upstream conversion.Annotation*).
ANNOTATION_POD_IP = "cni.projectcalico.org/podIP"
ANNOTATION_POD_IPS = "cni.projectcalico.org/podIPs"
ANNOTATION_CONTAINER_ID = "cni.projectcalico.org/containerID"

LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"

NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"
K8S_POLICY_PREFIX = "knp.default."
K8S_POLICY_ORDER = 1000.0

# Node annotations (upstream node.go).
NODE_ANNOTATIONS = {
    "ipv4Address": "projectcalico.org/IPv4Address",
    "ipv6Address": "projectcalico.org/IPv6Address",
    "asNumber": "projectcalico.org/ASNumber",
    "ipv4IPIPTunnelAddr": "projectcalico.org/IPv4IPIPTunnelAddr",
    "routeReflectorClusterID": "projectcalico.org/RouteReflectorClusterID",
}
NODE_SPEC_ANNOTATIONS = {
    "ipv4VXLANTunnelAddr": "projectcalico.org/IPv4VXLANTunnelAddr",
    "vxlanTunnelMACAddr": "projectcalico.org/VXLANTunnelMACAddr",
    "ipv6VXLANTunnelAddr": "projectcalico.org/IPv6VXLANTunnelAddr",
    "vxlanTunnelMACAddrV6": "projectcalico.org/VXLANTunnelMACAddrV6",
}
NODE_STATUS_ANNOTATIONS = {
    "wireguardPublicKey": "projectcalico.org/WireguardPublicKey",
    "wireguardPublicKeyV6": "projectcalico.org/WireguardPublicKeyV6",
}
NODE_LABELS_ANNOTATION = "projectcalico.org/labels"


class NotConvertible(ValueError):
    """The name does not denote an object of the mapped kind."""


# -- WorkloadEndpoint names --------------------------------------------------------------


def _escape(segment: str) -> str:
    return segment.replace("-", "--")


def wep_name(node: str, pod: str, endpoint: str = "eth0") -> str:
    return "-".join(_escape(s) for s in (node, "k8s", pod, endpoint))


def parse_wep_name(name: str) -> tuple[str, str, str, str]:
    """``node--1-k8s-my--pod-eth0`` -> (node, orchestrator, workload, endpoint)."""
    segments: list[str] = []
    current = ""
    i = 0
    while i < len(name):
        if name[i] == "-":
            if i + 1 < len(name) and name[i + 1] == "-":
                current += "-"
                i += 2
                continue
            segments.append(current)
            current = ""
        else:
            current += name[i]
        i += 1
    segments.append(current)
    if len(segments) != 4 or not all(segments[:3]):
        raise NotConvertible(f"{name!r} is not a <node>-<orchestrator>-<workload>-<endpoint> name")
    return segments[0], segments[1], segments[2], segments[3]


def pod_of_wep(name: str) -> str:
    node, orchestrator, pod, _ = parse_wep_name(name)
    if orchestrator != "k8s":
        raise NotConvertible(
            f"WorkloadEndpoint {name!r} is not a Kubernetes pod (orchestrator {orchestrator!r}): "
            "the kubernetes datastore stores only pod endpoints"
        )
    return pod


def host_ifname(namespace: str, pod: str, prefix: str = "cali") -> str:
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


# -- Pod -> WorkloadEndpoint -----------------------------------------------------------


def is_calico_pod(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return not spec.get("hostNetwork") and bool(spec.get("nodeName"))


def _as_net(ip: str) -> str:
    if "/" in ip:
        return str(ipaddress.ip_interface(ip))
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


def pod_ips(pod: dict[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return []
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    ips: list[str] = [p["ip"] for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    if not ips and annotations.get(ANNOTATION_POD_IPS):
        ips = [ip.strip() for ip in annotations[ANNOTATION_POD_IPS].split(",") if ip.strip()]
    if not ips and annotations.get(ANNOTATION_POD_IP):
        ips = [annotations[ANNOTATION_POD_IP].strip()]
    out = []
    for ip in ips:
        try:
            out.append(_as_net(ip))
        except ValueError:
            continue
    return out


def pod_to_wep(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace", "default")
    name = meta["name"]
    node = spec.get("nodeName", "")
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or ""
    labels = dict(meta.get("labels") or {})
    labels[LABEL_NAMESPACE] = namespace
    labels[LABEL_ORCHESTRATOR] = "k8s"
    if sa:
        labels[LABEL_SERVICE_ACCOUNT] = sa
    profiles = [NAMESPACE_PROFILE_PREFIX + namespace]
    if sa:
        profiles.append(f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{sa}")
    ports = []
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if not port.get("name") or not port.get("containerPort"):
                continue
            entry: dict[str, Any] = {
                "name": port["name"],
                "protocol": port.get("protocol") or "TCP",
                "port": int(port["containerPort"]),
            }
            if port.get("hostPort"):
                entry["hostPort"] = int(port["hostPort"])
                entry["hostIP"] = port.get("hostIP", "")
            ports.append(entry)
    annotations = meta.get("annotations") or {}
    wep_spec: dict[str, Any] = {
        "orchestrator": "k8s",
        "node": node,
        "pod": name,
        "endpoint": "eth0",
        "containerID": annotations.get(ANNOTATION_CONTAINER_ID, ""),
        "serviceAccountName": sa,
        "ipNetworks": pod_ips(pod),
        "profiles": profiles,
        "interfaceName": host_ifname(namespace, name),
    }
    if ports:
        wep_spec["ports"] = ports
    wep_meta: dict[str, Any] = {
        "name": wep_name(node, name),
        "namespace": namespace,
        "labels": labels,
        "resourceVersion": meta.get("resourceVersion", ""),
        "uid": meta.get("uid", ""),
        "creationTimestamp": meta.get("creationTimestamp"),
    }
    return {"apiVersion": V3, "kind": "WorkloadEndpoint", "metadata": wep_meta, "spec": wep_spec}


def wep_annotations(wep: dict[str, Any]) -> dict[str, str]:
    """The annotations the CNI plugin's WorkloadEndpoint write sets on the pod."""
    spec = wep.get("spec") or {}
    ips = list(spec.get("ipNetworks") or [])
    annotations: dict[str, str] = {}
    if ips:
        annotations[ANNOTATION_POD_IP] = ips[0]
        annotations[ANNOTATION_POD_IPS] = ",".join(ips)
    if spec.get("containerID"):
        annotations[ANNOTATION_CONTAINER_ID] = spec["containerID"]
    return annotations


# -- Namespace / ServiceAccount -> Profile -------------------------------------------------


def _meta(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {
        "name": name,
        "resourceVersion": meta.get("resourceVersion", ""),
        "uid": meta.get("uid", ""),
        "creationTimestamp": meta.get("creationTimestamp"),
    }


def namespace_to_profile(ns: dict[str, Any]) -> dict[str, Any]:
    name = ns["metadata"]["name"]
    labels = {NAMESPACE_LABEL_PREFIX + k: v for k, v in (ns["metadata"].get("labels") or {}).items()}
    labels[NAMESPACE_LABEL_PREFIX + NAME_LABEL] = name
    return {
        "apiVersion": V3,
        "kind": "Profile",
        "metadata": _meta(NAMESPACE_PROFILE_PREFIX + name, ns),
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": labels,
        },
    }


def service_account_to_profile(sa: dict[str, Any]) -> dict[str, Any]:
    meta = sa["metadata"]
    labels = {SERVICE_ACCOUNT_LABEL_PREFIX + k: v for k, v in (meta.get("labels") or {}).items()}
    labels[SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL] = meta["name"]
    return {
        "apiVersion": V3,
        "kind": "Profile",
        "metadata": _meta(f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{meta['namespace']}.{meta['name']}", sa),
        "spec": {"labelsToApply": labels},
    }


def default_allow_profile() -> dict[str, Any]:
    return {
        "apiVersion": V3,
        "kind": "Profile",
        "metadata": {"name": DEFAULT_ALLOW_PROFILE, "resourceVersion": "1"},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
    }


def parse_profile_name(name: str) -> tuple[str, str | None]:
    """``kns.<ns>`` -> ("namespace", ns / None); ``ksa.<ns>.<sa>`` -> ("serviceaccount", "<ns>/<sa>")."""
    if name.startswith(NAMESPACE_PROFILE_PREFIX) and len(name) > len(NAMESPACE_PROFILE_PREFIX):
        return "namespace", name[len(NAMESPACE_PROFILE_PREFIX):]
    if name.startswith(SERVICE_ACCOUNT_PROFILE_PREFIX):
        ns, dot, sa = name[len(SERVICE_ACCOUNT_PROFILE_PREFIX):].partition(".")
        if dot and ns and sa:
            return "serviceaccount", f"{ns}/{sa}"
    if name == DEFAULT_ALLOW_PROFILE:
        return "default", None
    raise NotConvertible(f"profile {name!r} is not backed by a Kubernetes object")


# -- Node ----------------------------------------------------------------------------------


def k8s_node_to_node(node: dict[str, Any]) -> dict[str, Any]:
    meta = node.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    bgp: dict[str, Any] = {}
    for field, annotation in NODE_ANNOTATIONS.items():
        if annotations.get(annotation):
            bgp[field] = annotations[annotation]
    spec: dict[str, Any] = {}
    if bgp:
        spec["bgp"] = bgp
    for field, annotation in NODE_SPEC_ANNOTATIONS.items():
        if annotations.get(annotation):
            spec[field] = annotations[annotation]
    spec["orchRefs"] = [{"nodeName": meta["name"], "orchestrator": "k8s"}]
    addresses = []
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") in ("InternalIP", "ExternalIP"):
            addresses.append({"address": addr.get("address"), "type": addr["type"]})
    if addresses:
        spec["addresses"] = addresses
    status: dict[str, Any] = {}
    for field, annotation in NODE_STATUS_ANNOTATIONS.items():
        if annotations.get(annotation):
            status[field] = annotations[annotation]
    pod_cidrs = (node.get("spec") or {}).get("podCIDRs")
    if pod_cidrs:
        status["podCIDRs"] = list(pod_cidrs)
    labels = dict(meta.get("labels") or {})
    out_meta = _meta(meta["name"], node)
    if labels:
        out_meta["labels"] = labels
    out: dict[str, Any] = {"apiVersion": V3, "kind": "Node", "metadata": out_meta, "spec": spec}
    if status:
        out["status"] = status
    return out


def node_annotation_patch(node: dict[str, Any]) -> dict[str, Any]:
    """Merge patch writing a Calico Node's fields into the k8s Node's annotations
    (null deletes an annotation the Calico Node no longer has) and labels."""
    spec = node.get("spec") or {}
    bgp = spec.get("bgp") or {}
    status = node.get("status") or {}
    annotations: dict[str, Any] = {}
    for field, annotation in NODE_ANNOTATIONS.items():
        annotations[annotation] = str(bgp[field]) if bgp.get(field) else None
    for field, annotation in NODE_SPEC_ANNOTATIONS.items():
        annotations[annotation] = str(spec[field]) if spec.get(field) else None
    for field, annotation in NODE_STATUS_ANNOTATIONS.items():
        annotations[annotation] = str(status[field]) if status.get(field) else None
    meta: dict[str, Any] = {"annotations": annotations}
    labels = (node.get("metadata") or {}).get("labels")
    if labels is not None:
        meta["labels"] = dict(labels)
    return {"metadata": meta}


# -- Kubernetes NetworkPolicy -> Calico NetworkPolicy ---------------------------------------


def _selector_from_label_selector(sel: dict[str, Any] | None, pod: bool) -> str:
    """A Kubernetes LabelSelector as a Calico selector expression."""
    parts: list[str] = []
    if pod:
        parts.append(f"{LABEL_ORCHESTRATOR} == 'k8s'")
    sel = sel or {}
    for key, value in sorted((sel.get("matchLabels") or {}).items()):
        parts.append(f"{key} == '{value}'")
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        quoted = ", ".join(f"'{v}'" for v in values)
        if op == "In":
            parts.append(f"{key} in {{ {quoted} }}")
        elif op == "NotIn":
            parts.append(f"{key} not in {{ {quoted} }}")
        elif op == "Exists":
            parts.append(f"has({key})")
        elif op == "DoesNotExist":
            parts.append(f"! has({key})")
    if not parts:
        return "all()"
    return " && ".join(parts)


def _ports(ports: list[dict[str, Any]] | None) -> list[tuple[str, list[Any]]]:
    """Group NetworkPolicyPorts by protocol (TCP if unset)."""
    if not ports:
        return [("", [])]
    grouped: dict[str, list[Any]] = {}
    for port in ports:
        proto = port.get("protocol") or "TCP"
        values = grouped.setdefault(proto, [])
        if port.get("port") is not None:
            if port.get("endPort"):
                values.append(f"{port['port']}:{port['endPort']}")
            else:
                values.append(port["port"])
    return list(grouped.items())


def _peers(peers: list[dict[str, Any]] | None, namespace: str) -> list[dict[str, Any]]:
    if not peers:
        return [{}]
    out = []
    for peer in peers:
        entity: dict[str, Any] = {}
        if peer.get("ipBlock"):
            entity["nets"] = [peer["ipBlock"]["cidr"]]
            if peer["ipBlock"].get("except"):
                entity["notNets"] = list(peer["ipBlock"]["except"])
        else:
            pod_sel = peer.get("podSelector")
            ns_sel = peer.get("namespaceSelector")
            entity["selector"] = _selector_from_label_selector(pod_sel, pod=True)
            if ns_sel is not None:
                entity["namespaceSelector"] = _selector_from_label_selector(ns_sel, pod=False)
        out.append(entity)
    return out


def _rules(entries: list[dict[str, Any]] | None, namespace: str, peer_key: str, side: str) -> list[dict[str, Any]]:
    rules = []
    for entry in entries or []:
        for proto, ports in _ports(entry.get("ports")):
            for peer in _peers(entry.get(peer_key), namespace):
                rule: dict[str, Any] = {"action": "Allow"}
                if proto:
                    rule["protocol"] = proto
                target: dict[str, Any] = dict(peer)
                if ports:
                    dest = rule.setdefault("destination", {})
                    dest["ports"] = ports
                if target:
                    if side in rule:
                        rule[side].update(target)
                    else:
                        rule[side] = target
                rules.append(rule)
    return rules


def k8s_policy_to_policy(knp: dict[str, Any]) -> dict[str, Any]:
    meta = knp.get("metadata") or {}
    spec = knp.get("spec") or {}
    namespace = meta.get("namespace", "default")
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
    out_spec: dict[str, Any] = {
        "tier": "default",
        "order": K8S_POLICY_ORDER,
        "selector": _selector_from_label_selector(spec.get("podSelector"), pod=True),
        "types": types,
    }
    if "Ingress" in types:
        out_spec["ingress"] = _rules(spec.get("ingress"), namespace, "from", "source")
    if "Egress" in types:
        out_spec["egress"] = _rules(spec.get("egress"), namespace, "to", "destination")
    out_meta = _meta(K8S_POLICY_PREFIX + meta["name"], knp)
    out_meta["namespace"] = namespace
    return {"apiVersion": V3, "kind": "NetworkPolicy", "metadata": out_meta, "spec": out_spec}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
