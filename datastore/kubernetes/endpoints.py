"""A Service's endpoints from its EndpointSlices (``discovery.k8s.io/v1``), and the node count.

Used by Typha discovery (Felix finds the ``calico-typha`` Service's Typhas) and by
Typha's connection rebalancing (how many Typhas and nodes there are). Plain GETs
over a :class:`~datastore.kubernetes.transport.Transport` (the stdlib one by
default); no watch, no kubernetes client.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datastore.kubernetes.transport import Transport

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ServiceEndpoint:
    ip: str
    port: int
    node: str | None  # the endpoint's nodeName, when the slice has it
    ready: bool

    @property
    def addr(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


def slices_path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def service_endpoints(api: Transport, namespace: str, service: str, port_name: str) -> list[ServiceEndpoint]:
    """Every endpoint address of ``service`` that serves the port named ``port_name``.

    A slice without that port contributes nothing (another version's Typhas, say).
    ``ready`` follows the EndpointSlice API: an absent condition means ready.
    Raises :class:`~datastore.kubernetes.transport.ApiError` /
    :class:`~datastore.errors.Unavailable` as the transport does."""
    reply = api.request("GET", slices_path(namespace), query={"labelSelector": f"{SERVICE_NAME_LABEL}={service}"})
    out: list[ServiceEndpoint] = []
    for eps in reply.get("items") or []:
        port = _named_port(eps.get("ports") or [], port_name)
        if port is None:
            continue
        for endpoint in eps.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready")
            node = endpoint.get("nodeName")
            for ip in endpoint.get("addresses") or []:
                out.append(ServiceEndpoint(str(ip), port, str(node) if node else None, ready is not False))
    return out


def _named_port(ports: list[dict[str, Any]], name: str) -> int | None:
    for p in ports:
        if (p.get("name") or "") == name and p.get("port"):
            return int(p["port"])
    return None


def count_nodes(api: Transport) -> int:
    """The number of Kubernetes Nodes, from a one-item list (``remainingItemCount``)."""
    reply = api.request("GET", "/api/v1/nodes", query={"limit": 1})
    meta = reply.get("metadata") or {}
    if meta.get("continue") and meta.get("remainingItemCount") is None:
        # The server did not count the rest: list names only, page by page.
        total, token = len(reply.get("items") or []), meta["continue"]
        while token:
            page = api.request("GET", "/api/v1/nodes", query={"limit": 500, "continue": token})
            total += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
        return total
    return len(reply.get("items") or []) + int(meta.get("remainingItemCount") or 0)
