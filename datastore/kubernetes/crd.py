"""Calico resources stored as CustomResources in ``crd.projectcalico.org/v1``.

Upstream's layout: the CR carries the v3 object's name, namespace, labels,
annotations and spec; the rest of the v3 metadata (creationTimestamp,
generation, ...) goes as JSON into the ``projectcalico.org/metadata``
annotation. IPAM values (blocks, affinities, handles, the IPAM config) are
converted between upstream's etcd JSON and their CRD specs here too.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

GROUP = "crd.projectcalico.org"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
V3 = "projectcalico.org/v3"
METADATA_ANNOTATION = "projectcalico.org/metadata"

LABEL_HOSTNAME_HASH = "projectcalico.org/hostname-hash"
LABEL_AFFINITY_TYPE = "projectcalico.org/affinity-type"
LABEL_IP_VERSION = "projectcalico.org/ip-version"


@dataclass(frozen=True)
class CRD:
    kind: str  # CR kind, e.g. "IPPool"
    plural: str  # e.g. "ippools"
    namespaced: bool

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        tail = f"/{name}" if name else ""
        return f"/apis/{GROUP}/{VERSION}{ns}/{self.plural}{tail}"


def _crds(*items: tuple[str, str, bool]) -> dict[str, CRD]:
    return {kind: CRD(kind, plural, ns) for kind, plural, ns in items}


# Every kind upstream stores as a CRD (the manifests ship all of them).
ALL_CRDS: dict[str, CRD] = _crds(
    ("BGPConfiguration", "bgpconfigurations", False),
    ("BGPFilter", "bgpfilters", False),
    ("BGPPeer", "bgppeers", False),
    ("BlockAffinity", "blockaffinities", False),
    ("CalicoNodeStatus", "caliconodestatuses", False),
    ("ClusterInformation", "clusterinformations", False),
    ("FelixConfiguration", "felixconfigurations", False),
    ("GlobalNetworkPolicy", "globalnetworkpolicies", False),
    ("GlobalNetworkSet", "globalnetworksets", False),
    ("HostEndpoint", "hostendpoints", False),
    ("IPAMBlock", "ipamblocks", False),
    ("IPAMConfig", "ipamconfigs", False),
    ("IPAMHandle", "ipamhandles", False),
    ("IPPool", "ippools", False),
    ("IPReservation", "ipreservations", False),
    ("KubeControllersConfiguration", "kubecontrollersconfigurations", False),
    ("NetworkPolicy", "networkpolicies", True),
    ("NetworkSet", "networksets", True),
    ("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", False),
    ("StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", True),
    ("StagedNetworkPolicy", "stagednetworkpolicies", True),
    ("Tier", "tiers", False),
)

# v3 kinds (datastore.kinds) whose objects are CRs of the same kind.
# IPAMConfiguration is stored in the IPAMConfig CRD (see ipam_config_*).
RESOURCE_CRDS: dict[str, CRD] = {
    kind: ALL_CRDS[kind]
    for kind in (
        "IPPool", "HostEndpoint", "NetworkPolicy", "GlobalNetworkPolicy", "Tier", "NetworkSet",
        "GlobalNetworkSet", "BGPConfiguration", "BGPPeer", "FelixConfiguration",
        "ClusterInformation", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
    )
}
RESOURCE_CRDS["IPAMConfiguration"] = ALL_CRDS["IPAMConfig"]


# -- v3 resource <-> CR ----------------------------------------------------------------


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def resource_to_cr(crd: CRD, v3: dict[str, Any], revision: str | None = None) -> dict[str, Any]:
    meta = dict(v3.get("metadata") or {})
    annotations = dict(meta.pop("annotations", None) or {})
    labels = meta.pop("labels", None)
    name = meta.pop("name", None)
    namespace = meta.pop("namespace", None)
    meta.pop("resourceVersion", None)
    uid = meta.pop("uid", None)
    meta.setdefault("creationTimestamp", now_rfc3339())
    annotations[METADATA_ANNOTATION] = json.dumps(meta, separators=(",", ":"), sort_keys=True)
    cr_meta: dict[str, Any] = {"name": name, "annotations": annotations}
    if crd.namespaced and namespace:
        cr_meta["namespace"] = namespace
    if labels:
        cr_meta["labels"] = labels
    if revision:
        cr_meta["resourceVersion"] = revision
    if uid:
        cr_meta["uid"] = uid
    cr: dict[str, Any] = {"apiVersion": API_VERSION, "kind": crd.kind, "metadata": cr_meta,
                          "spec": v3.get("spec") or {}}
    if "status" in v3:
        cr["status"] = v3["status"]
    return cr


def cr_to_resource(kind: str, cr: dict[str, Any]) -> dict[str, Any]:
    cr_meta = cr.get("metadata") or {}
    annotations = dict(cr_meta.get("annotations") or {})
    stored = annotations.pop(METADATA_ANNOTATION, None)
    meta: dict[str, Any] = {}
    if stored:
        try:
            meta.update(json.loads(stored))
        except ValueError:
            pass
    meta["name"] = cr_meta.get("name")
    if cr_meta.get("namespace"):
        meta["namespace"] = cr_meta["namespace"]
    meta["resourceVersion"] = cr_meta.get("resourceVersion", "")
    meta["uid"] = cr_meta.get("uid", "")
    if not meta.get("creationTimestamp") and cr_meta.get("creationTimestamp"):
        meta["creationTimestamp"] = cr_meta["creationTimestamp"]
    if cr_meta.get("labels"):
        meta["labels"] = dict(cr_meta["labels"])
    if annotations:
        meta["annotations"] = annotations
    out: dict[str, Any] = {"apiVersion": V3, "kind": kind, "metadata": meta, "spec": cr.get("spec") or {}}
    if "status" in cr:
        out["status"] = cr["status"]
    return out


# -- IPAM names (libcalico-go names.CIDRToName, affinity naming) ------------------------


def cidr_to_name(cidr: str) -> str:
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


def affinity_name(host: str, cidr: str) -> str:
    cidrname = cidr_to_name(cidr)
    name = f"{host}-{cidrname}"
    if len(name) >= 253:
        # Trim the host so name + "-" + 11 hex of a hash fits in 252 characters.
        name = f"{host[:252 - len(cidrname) - 13]}-{cidrname}"
        digest = hashlib.sha256(f"{host}+{cidrname}".encode()).hexdigest()[:11]
        name = f"{name}-{digest}"
    return name


def hostname_hash(host: str) -> str:
    """Label-safe (52 chars) hash of a node name: base32 of SHA3-256, unpadded."""
    return base64.b32encode(hashlib.sha3_256(host.encode()).digest()).decode().rstrip("=")


def ip_version(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def handle_name(handle_id: str) -> str:
    return handle_id.lower()


# -- IPAM values <-> CR specs ------------------------------------------------------------


def block_to_cr(cidr: str, value: dict[str, Any], revision: str | None = None,
                uid: str | None = None) -> dict[str, Any]:
    spec = dict(value)
    spec["cidr"] = cidr
    if "affinity_claim_time" in spec:
        claim = spec.pop("affinity_claim_time")
        if claim is not None:
            spec["affinityClaimTime"] = claim
    spec.setdefault("deleted", False)
    spec.setdefault("strictAffinity", False)  # required by older upstream schemas
    return _cr("IPAMBlock", cidr_to_name(cidr), spec, None, revision, uid)


def cr_to_block(cr: dict[str, Any]) -> dict[str, Any]:
    value = dict(cr.get("spec") or {})
    if "affinityClaimTime" in value:
        value["affinity_claim_time"] = value.pop("affinityClaimTime")
    value.pop("strictAffinity", None)
    value.setdefault("affinity", None)
    return value


def affinity_to_cr(host: str, cidr: str, value: dict[str, Any], revision: str | None = None,
                   uid: str | None = None, affinity_type: str = "host") -> dict[str, Any]:
    spec = {
        "state": value.get("state") or "confirmed",
        "node": host,
        "cidr": cidr,
        "deleted": "true" if value.get("deleted") else "false",
        "type": affinity_type,
    }
    labels = {
        LABEL_HOSTNAME_HASH: hostname_hash(host),
        LABEL_AFFINITY_TYPE: affinity_type,
        LABEL_IP_VERSION: str(ip_version(cidr)),
    }
    return _cr("BlockAffinity", affinity_name(host, cidr), spec, labels, revision, uid)


def cr_to_affinity(cr: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    spec = cr.get("spec") or {}
    deleted = str(spec.get("deleted") or "false").lower() == "true"
    return spec.get("node", ""), spec.get("cidr", ""), {"state": spec.get("state") or "confirmed",
                                                       "deleted": deleted}


def handle_to_cr(handle_id: str, value: dict[str, Any], revision: str | None = None,
                 uid: str | None = None) -> dict[str, Any]:
    spec = dict(value)
    spec["handleID"] = handle_id
    spec.setdefault("block", {})
    spec.setdefault("deleted", False)
    return _cr("IPAMHandle", handle_name(handle_id), spec, None, revision, uid)


def cr_to_handle(cr: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = dict(cr.get("spec") or {})
    handle_id = spec.get("handleID") or (cr.get("metadata") or {}).get("name", "")
    spec.setdefault("block", {})
    return handle_id, spec


IPAM_CONFIG_NAME = "default"


def ipam_config_to_cr(value: dict[str, Any], revision: str | None = None) -> dict[str, Any]:
    """etcd IPAM config JSON (strict_affinity, auto_allocate_blocks, maxBlocksPerHost)."""
    spec = {
        "strictAffinity": bool(value.get("strict_affinity", False)),
        "autoAllocateBlocks": bool(value.get("auto_allocate_blocks", False)),
    }
    if value.get("maxBlocksPerHost"):
        spec["maxBlocksPerHost"] = int(value["maxBlocksPerHost"])
    return _cr("IPAMConfig", IPAM_CONFIG_NAME, spec, None, revision, None)


def cr_to_ipam_config(cr: dict[str, Any]) -> dict[str, Any]:
    spec = cr.get("spec") or {}
    out: dict[str, Any] = {}
    if spec.get("strictAffinity"):
        out["strict_affinity"] = True
    if spec.get("autoAllocateBlocks"):
        out["auto_allocate_blocks"] = True
    if spec.get("maxBlocksPerHost"):
        out["maxBlocksPerHost"] = int(spec["maxBlocksPerHost"])
    return out


def _cr(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None,
        revision: str | None, uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    if revision:
        meta["resourceVersion"] = revision
    if uid:
        meta["uid"] = uid
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}
