"""Datastore helpers for IPAM tests: workload endpoints, snapshots, inventory."""
from __future__ import annotations

import ipaddress
from typing import Any

from cni.names import Workload
from datastore.keys import ListOptions, ResourceKey


def wep_name(node: str, container_id: str, iface: str = "eth0") -> str:
    return Workload.from_args(node, container_id, iface, {}).endpoint_name


def _is_kubernetes(backend: Any) -> bool:
    return type(backend).__name__ == "KubernetesBackend"


def create_wep(backend: Any, node: str, container_id: str, addresses: list[str]) -> None:
    """What the calico plugin writes after a successful IPAM ADD (cni
    orchestrator; in Kubernetes mode a pod named after the container, as
    the kubelet would have created, with the plugin's annotations)."""
    nets = []
    for a in addresses:
        ip = ipaddress.ip_interface(a).ip
        nets.append(f"{ip}/{ip.max_prefixlen}")
    if _is_kubernetes(backend):
        from tests.kubernetes.fixtures import create_pod_workload

        create_pod_workload(backend, node, container_id, nets)
        return
    name = wep_name(node, container_id)
    backend.apply(
        ResourceKey("WorkloadEndpoint", name, "default"),
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"orchestrator": "cni", "node": node, "containerID": container_id,
                     "endpoint": "eth0", "interfaceName": Workload.from_args(node, container_id, "eth0", {}).host_ifname,
                     "ipNetworks": nets},
        },
    )


def delete_wep(backend: Any, node: str, container_id: str) -> None:
    from datastore.errors import NotFound

    if _is_kubernetes(backend):
        from tests.kubernetes.fixtures import delete_pod_workload

        delete_pod_workload(backend, container_id)
        return

    try:
        backend.delete(ResourceKey("WorkloadEndpoint", wep_name(node, container_id), "default"))
    except NotFound:
        pass


def ipam_snapshot(backend: Any) -> dict[str, Any]:
    """Every IPAM object (path -> (value, revision)), to prove nothing changed."""
    out = {}
    for kind in ("Block", "BlockAffinity", "IPAMHandle"):
        for kv in backend.list(ListOptions(kind=kind)).items:
            out[kv.key.path] = (kv.value, kv.revision)
    return out


def allocations(backend: Any) -> dict[str, tuple[str, str | None, dict[str, str]]]:
    """ip -> (block cidr, handle, attributes) over every block."""
    from datastore.models.ipam import AllocationBlock
    from ipam import blocks as blk

    out: dict[str, tuple[str, str | None, dict[str, str]]] = {}
    for kv in backend.list(ListOptions(kind="Block")).items:
        block = AllocationBlock.from_dict(kv.value)
        for ordinal, index in enumerate(block.allocations):
            if index is None:
                continue
            attr = block.attributes[index]
            ip = str(blk.ip_of(block, ordinal))
            assert ip not in out, f"{ip} allocated twice"
            out[ip] = (block.cidr, attr.handle_id, dict(attr.secondary or {}))
    return out


def block_affinities(backend: Any) -> dict[str, str | None]:
    return {kv.value["cidr"]: kv.value.get("affinity") for kv in backend.list(ListOptions(kind="Block")).items}


def handles(backend: Any) -> dict[str, dict[str, int]]:
    return {kv.key.handle_id: kv.value.get("block", {}) for kv in backend.list(ListOptions(kind="IPAMHandle")).items}
