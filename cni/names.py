"""Workload identity and the names upstream Calico derives from it."""
from __future__ import annotations

try:  # the builtin digest: hashlib would load OpenSSL's libcrypto (~4 ms per exec)
    from _sha1 import sha1
except ImportError:  # pragma: no cover - builds without the builtin module
    from hashlib import sha1
from dataclasses import dataclass

HOST_IFACE_PREFIX = "cali"


@dataclass(frozen=True)
class Workload:
    """Who the attachment is for: a Kubernetes pod, or a plain CNI container."""

    node: str
    orchestrator: str  # "k8s" or "cni"
    namespace: str
    pod: str  # pod name (k8s) or "" (cni)
    container_id: str
    ifname: str

    @classmethod
    def from_args(cls, node: str, container_id: str, ifname: str, cni_args: dict[str, str]) -> "Workload":
        namespace = cni_args.get("K8S_POD_NAMESPACE", "")
        pod = cni_args.get("K8S_POD_NAME", "")
        if namespace and pod:
            return cls(node, "k8s", namespace, pod, container_id, ifname)
        return cls(node, "cni", "default", "", container_id, ifname)

    @property
    def workload_id(self) -> str:
        return self.pod if self.orchestrator == "k8s" else self.container_id

    @property
    def endpoint_name(self) -> str:
        """WorkloadEndpoint name: segments joined by '-', each '-' inside a
        segment doubled (``node--1-k8s-my--pod-eth0``)."""
        segments = [self.node, self.orchestrator, self.workload_id, self.ifname]
        return "-".join(s.replace("-", "--") for s in segments)

    @property
    def host_ifname(self) -> str:
        """Host-side veth: ``cali`` + 11 hex of SHA-1("<namespace>.<pod>") for
        pods (upstream's name). For plain CNI containers upstream takes the
        container ID's first 11 characters; runtimes such as ``ctr`` prefix IDs
        with their namespace, which makes those collide, so we hash the ID.
        A second interface of the same workload gets its own hash."""
        if self.orchestrator == "k8s":
            seed = f"{self.namespace}.{self.pod}"
        else:
            seed = self.container_id
        if self.ifname != "eth0":
            seed += f".{self.ifname}"
        return HOST_IFACE_PREFIX + sha1(seed.encode()).hexdigest()[:11]

    @property
    def handle_id_suffix(self) -> str:
        return self.container_id
