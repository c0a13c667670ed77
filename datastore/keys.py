"""Datastore keys and their etcd v3 paths (upstream Calico's layout).

Resources: ``/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>``
IPAM:      ``/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26``
           ``/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26``
           ``/calico/ipam/v2/handle/<handle id>``
           ``/calico/ipam/v2/config``
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union

from datastore.kinds import kind_info, KINDS

RESOURCE_ROOT = "/calico/resources/v3/projectcalico.org/"
IPAM_ROOT = "/calico/ipam/v2/"


def _cidr_segment(cidr: str) -> str:
    return cidr.replace("/", "-")


def _segment_cidr(segment: str) -> str:
    address, _, prefix = segment.rpartition("-")
    return f"{address}/{prefix}"


def _valid_cidr(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return True


def _ip_version(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


@dataclass(frozen=True)
class ResourceKey:
    kind: str
    name: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        info = kind_info(self.kind)
        object.__setattr__(self, "kind", info.name)
        if info.namespaced and not self.namespace:
            raise ValueError(f"{info.name} is namespaced: a namespace is required")
        if not info.namespaced and self.namespace:
            object.__setattr__(self, "namespace", None)

    @property
    def path(self) -> str:
        info = kind_info(self.kind)
        ns = f"{self.namespace}/" if info.namespaced else ""
        return f"{RESOURCE_ROOT}{info.plural}/{ns}{self.name}"

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}({ns}{self.name})"


@dataclass(frozen=True)
class BlockKey:
    cidr: str

    @property
    def path(self) -> str:
        return f"{IPAM_ROOT}assignment/ipv{_ip_version(self.cidr)}/block/{_cidr_segment(self.cidr)}"

    def __str__(self) -> str:
        return f"Block({self.cidr})"


@dataclass(frozen=True)
class BlockAffinityKey:
    host: str
    cidr: str

    @property
    def path(self) -> str:
        return (
            f"{IPAM_ROOT}host/{self.host}/ipv{_ip_version(self.cidr)}/block/"
            f"{_cidr_segment(self.cidr)}"
        )

    def __str__(self) -> str:
        return f"BlockAffinity({self.host}, {self.cidr})"


@dataclass(frozen=True)
class HandleKey:
    handle_id: str

    @property
    def path(self) -> str:
        return f"{IPAM_ROOT}handle/{self.handle_id}"

    def __str__(self) -> str:
        return f"IPAMHandle({self.handle_id})"


@dataclass(frozen=True)
class IPAMConfigKey:
    @property
    def path(self) -> str:
        return f"{IPAM_ROOT}config"

    def __str__(self) -> str:
        return "IPAMConfig"


Key = Union[ResourceKey, BlockKey, BlockAffinityKey, HandleKey, IPAMConfigKey]


@dataclass(frozen=True)
class ListOptions:
    """What to list: a kind of resource (optionally one namespace, optionally a
    name prefix), or one of the IPAM collections.

    ``node`` (WorkloadEndpoint only) keeps one node's endpoints: the
    Kubernetes backend asks the API server for ``spec.nodeName=<node>`` pods
    only; etcd narrows the key range when a namespace is given and otherwise
    filters on the node segment of each endpoint's name (both in lists and
    in watches)."""

    kind: str  # a resource kind, or "Block", "BlockAffinity", "IPAMHandle"
    namespace: str | None = None
    name_prefix: str = ""
    host: str | None = None  # BlockAffinity only: one host's affinities
    ip_version: int | None = None  # Block / BlockAffinity only
    node: str | None = None  # WorkloadEndpoint only: one node's endpoints

    def __post_init__(self) -> None:
        if self.node is not None and (self.kind in ("Block", "BlockAffinity", "IPAMHandle", "IPAMConfig")
                                      or kind_info(self.kind).name != "WorkloadEndpoint"):
            raise ValueError(f"ListOptions.node filters WorkloadEndpoints only, not {self.kind}")

    def accepts_node(self, key: "Key") -> bool:
        """Whether ``key`` passes the ``node`` filter (from the key alone)."""
        if self.node is None:
            return True
        return isinstance(key, ResourceKey) and wep_node(key.name) == self.node

    @property
    def prefix(self) -> str:
        if self.kind == "Block":
            version = f"ipv{self.ip_version}/" if self.ip_version else ""
            return f"{IPAM_ROOT}assignment/{version}"
        if self.kind == "BlockAffinity":
            if self.host is None:
                return f"{IPAM_ROOT}host/"
            version = f"ipv{self.ip_version}/" if self.ip_version else ""
            return f"{IPAM_ROOT}host/{self.host}/{version}"
        if self.kind == "IPAMHandle":
            return f"{IPAM_ROOT}handle/{self.name_prefix}"
        info = kind_info(self.kind)
        if info.namespaced and self.namespace:
            name_prefix = self.name_prefix
            if self.node is not None and not name_prefix:
                name_prefix = escape_wep_segment(self.node) + "-"  # a superset: accepts_node decides
            return f"{RESOURCE_ROOT}{info.plural}/{self.namespace}/{name_prefix}"
        return f"{RESOURCE_ROOT}{info.plural}/{self.name_prefix if not info.namespaced else ''}"


def escape_wep_segment(segment: str) -> str:
    """WorkloadEndpoint names join node, orchestrator, workload and endpoint
    with ``-`` and double the hyphens inside each segment."""
    return segment.replace("-", "--")


def wep_node(name: str) -> str | None:
    """The node segment of a WorkloadEndpoint name (``node--1-k8s-pod-eth0`` ->
    ``node-1``); ``None`` when the name has no separator."""
    i = 0
    while i < len(name):
        if name[i] == "-":
            if name.startswith("--", i):
                i += 2
                continue
            return name[:i].replace("--", "-")
        i += 1
    return None


_PLURALS = {k.plural: k for k in KINDS.values()}


def key_from_path(path: str) -> Key | None:
    """Parse an etcd path back into a key; ``None`` for paths we do not own."""
    if path.startswith(RESOURCE_ROOT):
        parts = path[len(RESOURCE_ROOT):].split("/")
        info = _PLURALS.get(parts[0])
        if info is None:
            return None
        if info.namespaced and len(parts) == 3 and parts[1] and parts[2]:
            return ResourceKey(info.name, parts[2], parts[1])
        if not info.namespaced and len(parts) == 2 and parts[1]:
            return ResourceKey(info.name, parts[1])
        return None
    if path.startswith(IPAM_ROOT):
        parts = path[len(IPAM_ROOT):].split("/")
        # A block path whose CIDR does not parse is not ours (a peer may send anything).
        if parts[0] == "assignment" and len(parts) == 4 and parts[2] == "block":
            cidr = _segment_cidr(parts[3])
            return BlockKey(cidr) if _valid_cidr(cidr) else None
        if parts[0] == "host" and len(parts) == 5 and parts[3] == "block":
            cidr = _segment_cidr(parts[4])
            return BlockAffinityKey(parts[1], cidr) if _valid_cidr(cidr) else None
        if parts[0] == "handle" and len(parts) == 2:
            return HandleKey(parts[1])
        if parts == ["config"]:
            return IPAMConfigKey()
    return None
