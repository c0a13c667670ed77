"""The resource kinds pycalico stores, as plain data.

This module must stay cheap to import (no pydantic): the etcd backend and the
CNI hot path use it to build keys. Models are looked up lazily by
:func:`model_for`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

API_VERSION = "projectcalico.org/v3"


@dataclass(frozen=True)
class Kind:
    name: str  # e.g. "IPPool"
    plural: str  # e.g. "ippools" (etcd key segment, lower-case plural as upstream)
    namespaced: bool
    model: str  # "module:Class" of the pydantic model


_MODELS = "datastore.models"

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("IPPool", "ippools", False, f"{_MODELS}.ippool:IPPool"),
        Kind("IPAMConfiguration", "ipamconfigurations", False, f"{_MODELS}.ipam:IPAMConfiguration"),
        Kind("Node", "nodes", False, f"{_MODELS}.node:Node"),
        Kind("WorkloadEndpoint", "workloadendpoints", True, f"{_MODELS}.endpoint:WorkloadEndpoint"),
        Kind("HostEndpoint", "hostendpoints", False, f"{_MODELS}.endpoint:HostEndpoint"),
        Kind("NetworkPolicy", "networkpolicies", True, f"{_MODELS}.policy:NetworkPolicy"),
        Kind("GlobalNetworkPolicy", "globalnetworkpolicies", False, f"{_MODELS}.policy:GlobalNetworkPolicy"),
        Kind("Profile", "profiles", False, f"{_MODELS}.policy:Profile"),
        Kind("Tier", "tiers", False, f"{_MODELS}.policy:Tier"),
        Kind("NetworkSet", "networksets", True, f"{_MODELS}.policy:NetworkSet"),
        Kind("GlobalNetworkSet", "globalnetworksets", False, f"{_MODELS}.policy:GlobalNetworkSet"),
        Kind("StagedNetworkPolicy", "stagednetworkpolicies", True, f"{_MODELS}.staged:StagedNetworkPolicy"),
        Kind("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", False,
             f"{_MODELS}.staged:StagedGlobalNetworkPolicy"),
        Kind("StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", True,
             f"{_MODELS}.staged:StagedKubernetesNetworkPolicy"),
        Kind("BGPConfiguration", "bgpconfigurations", False, f"{_MODELS}.bgp:BGPConfiguration"),
        Kind("BGPPeer", "bgppeers", False, f"{_MODELS}.bgp:BGPPeer"),
        Kind("FelixConfiguration", "felixconfigurations", False, f"{_MODELS}.felix:FelixConfiguration"),
        Kind("ClusterInformation", "clusterinformations", False, f"{_MODELS}.cluster:ClusterInformation"),
    )
}

# Case-insensitive aliases an operator may type (calicoctl get ippool / ippools / IPPool).
_ALIASES: dict[str, str] = {}
for _k in KINDS.values():
    _ALIASES[_k.name.lower()] = _k.name
    _ALIASES[_k.plural] = _k.name


def kind_info(kind: str) -> Kind:
    """Return the :class:`Kind` for a kind name, plural or lower-case alias."""
    name = _ALIASES.get(kind.lower())
    if name is None:
        raise KeyError(f"unknown resource kind {kind!r}")
    return KINDS[name]


def model_for(kind: str) -> Any:
    """Import and return the pydantic model class for ``kind`` (lazy)."""
    module, _, cls = kind_info(kind).model.partition(":")
    return getattr(importlib.import_module(module), cls)
