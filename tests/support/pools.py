"""Datastore fixtures for tests: pools, nodes, cluster information."""
from __future__ import annotations

from typing import Any

from datastore.backend import Backend
from datastore.keys import ResourceKey


def create_pool(backend: Backend, name: str, cidr: str, **spec: Any) -> None:
    body: dict[str, Any] = {"cidr": cidr, **spec}
    backend.create(
        ResourceKey("IPPool", name),
        {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": body},
    )


def create_node(backend: Backend, name: str, labels: dict[str, str] | None = None,
                ipv4: str | None = None, asn: str | None = None) -> None:
    spec: dict[str, Any] = {}
    if ipv4:
        spec["bgp"] = {"ipv4Address": ipv4}
        if asn:
            spec["bgp"]["asNumber"] = asn
    backend.create(
        ResourceKey("Node", name),
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        },
    )
