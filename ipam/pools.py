"""Which IP pools an assignment may use (upstream ``determinePools``).

A pool is usable for a workload on a node when it is enabled, of the right
IP family, allows the ``Workload`` use, and its ``nodeSelector`` matches the
node's labels (and its ``namespaceSelector`` the namespace's labels, when
those are known). Pools named in the netconf (``ipv4_pools`` /
``ipv6_pools``, by CIDR or name) restrict the choice and must exist and be
enabled; pools with ``assignmentMode: Manual`` are used only when named.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from datastore.backend import Backend
from datastore.errors import NotFound
from datastore.keys import ListOptions, ResourceKey
from ipam.errors import PoolError

log = logging.getLogger(__name__)

WORKLOAD = "Workload"


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: str
    block_size: int
    disabled: bool = False
    node_selector: str = "all()"
    namespace_selector: str | None = None
    allowed_uses: tuple[str, ...] = ("Workload", "Tunnel")
    assignment_mode: str = "Automatic"

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version

    def describe(self) -> str:
        return f"{self.name} ({self.cidr})"

    def contains_block(self, block_cidr: str) -> bool:
        net = ipaddress.ip_network(block_cidr)
        return net.version == self.version and net.subnet_of(self.network)  # type: ignore[arg-type]

    @classmethod
    def from_resource(cls, value: dict[str, Any]) -> "Pool":
        """From the stored IPPool dict, validated as the IPPool model does.
        The plain form is checked here; anything else goes through the
        pydantic model (which raises its ValidationError, a ValueError)."""
        try:
            return _plain_pool(value)
        except _Unplain:
            log.debug("IPPool %s not in the plain form: validating it with the pydantic model",
                      (value.get("metadata") or {}).get("name") if isinstance(value, dict) else value)
        from datastore.models.ippool import IPPool

        pool = IPPool.model_validate(value)
        spec = pool.spec
        return cls(
            name=pool.metadata.name,
            cidr=spec.cidr,
            block_size=spec.block_size or DEFAULT_BLOCK_SIZE[spec.network.version],
            disabled=bool(spec.disabled),
            node_selector=spec.node_selector or "all()",
            namespace_selector=spec.namespace_selector,
            allowed_uses=tuple(spec.allowed_uses),
            assignment_mode=spec.assignment_mode,
        )


# -- the plain IPPool form, without pydantic -----------------------------------
# Same rules as datastore.models.ippool (tests/ipam/test_values.py compares
# them); whatever is not plainly valid is left to the model.

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
_BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
_LINK_LOCAL = {4: ipaddress.ip_network("169.254.0.0/16"), 6: ipaddress.ip_network("fe80::/10")}
_ENCAP = ("Never", "Always", "CrossSubnet")
_USES = ("Workload", "Tunnel", "LoadBalancer")
_SPEC_KEYS = frozenset({"cidr", "vxlanMode", "ipipMode", "natOutgoing", "disabled", "disableBGPExport", "blockSize",
                        "nodeSelector", "namespaceSelector", "allowedUses", "assignmentMode"})
_PLAIN_META = frozenset({"name", "uid", "resourceVersion", "creationTimestamp"})
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class _Unplain(Exception):
    pass


def _plain_selector(v: Any) -> str:
    if type(v) is not str:
        raise _Unplain
    if v != "all()":
        from datastore.selector import SelectorError, validate_selector

        try:
            validate_selector(v)
        except SelectorError:
            raise _Unplain from None
    return v


def _plain_pool(value: Any) -> Pool:
    if type(value) is not dict or not set(value) <= {"apiVersion", "kind", "metadata", "spec", "status"}:
        raise _Unplain
    if value.get("apiVersion") != "projectcalico.org/v3" or value.get("kind") != "IPPool":
        raise _Unplain
    meta, spec, status = value.get("metadata"), value.get("spec"), value.get("status")
    if type(meta) is not dict or not set(meta) <= _PLAIN_META or type(spec) is not dict or not set(spec) <= _SPEC_KEYS:
        raise _Unplain
    if status is not None and type(status) is not dict:
        raise _Unplain
    name = meta.get("name")
    if type(name) is not str or len(name) > 253 or not _NAME_RE.match(name):
        raise _Unplain
    if not all(type(meta.get(k, "")) is str for k in ("uid", "resourceVersion", "creationTimestamp")):
        raise _Unplain
    cidr = spec.get("cidr")
    if type(cidr) is not str or "/" not in cidr:
        raise _Unplain
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        raise _Unplain from None
    if net.network_address != ipaddress.ip_address(cidr.split("/", 1)[0]) or net.overlaps(_LINK_LOCAL[net.version]):
        raise _Unplain
    vxlan, ipip = spec.get("vxlanMode", "Never"), spec.get("ipipMode", "Never")
    if vxlan not in _ENCAP or ipip not in _ENCAP or type(vxlan) is not str or type(ipip) is not str:
        raise _Unplain
    if ipip != "Never" and (net.version == 6 or vxlan != "Never"):
        raise _Unplain
    for flag in ("natOutgoing", "disabled", "disableBGPExport"):
        if spec.get(flag) is not None and type(spec[flag]) is not bool:
            raise _Unplain
    disabled = bool(spec.get("disabled"))
    block_size = spec.get("blockSize")
    if block_size is not None and type(block_size) is not int:
        raise _Unplain
    if not block_size:
        block_size = DEFAULT_BLOCK_SIZE[net.version]
    else:
        lo, hi = _BLOCK_SIZE_RANGE[net.version]
        if not lo <= block_size <= hi or (not disabled and net.prefixlen > block_size):
            raise _Unplain
    node_selector = _plain_selector(spec["nodeSelector"]) if "nodeSelector" in spec else "all()"
    ns_selector = spec.get("namespaceSelector")
    if ns_selector is not None:
        _plain_selector(ns_selector)
    uses = spec.get("allowedUses", [])
    if type(uses) is not list or not all(type(u) is str and u in _USES for u in uses) or len(set(uses)) != len(uses):
        raise _Unplain
    mode = spec.get("assignmentMode", "Automatic")
    if mode not in ("Automatic", "Manual") or type(mode) is not str:
        raise _Unplain
    return Pool(
        name=name,
        cidr=str(net),
        block_size=block_size,
        disabled=disabled,
        node_selector=node_selector or "all()",
        namespace_selector=ns_selector,
        allowed_uses=tuple(uses) or ("Workload", "Tunnel"),
        assignment_mode=mode,
    )


def load_pools(backend: Backend) -> list[Pool]:
    pools = []
    for kv in backend.list(ListOptions(kind="IPPool")).items:
        try:
            pools.append(Pool.from_resource(kv.value))
        except ValueError as exc:
            log.warning("ignoring invalid IPPool %s: %s", kv.key, exc)
    return pools


def _trivial(selector: str | None) -> bool:
    return selector is None or selector.strip() in ("", "all()")


def _matches(selector: str | None, labels: dict[str, str]) -> bool:
    if _trivial(selector):
        return True
    from datastore.selector import parse_selector

    return bool(parse_selector(selector or "").evaluate(labels))


def node_labels(backend: Backend, node: str) -> dict[str, str]:
    """The Node resource's labels ({} when the Node does not exist, as on
    etcd clusters without calico-node)."""
    try:
        value = backend.get(ResourceKey("Node", node)).value
    except NotFound:
        return {}
    return dict((value.get("metadata") or {}).get("labels") or {})


@dataclass
class PoolChoice:
    pools: list[Pool]
    all_pools: list[Pool] = field(default_factory=list)


def resolve_requested(pools: list[Pool], requested: list[str], version: int) -> list[Pool]:
    """Pools named by CIDR or name in the netconf; each must exist, be
    enabled and be of ``version``."""
    out: list[Pool] = []
    family = f"ipv{version}_pools"
    for item in requested:
        match = None
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            net = None
        for pool in pools:
            if (net is not None and pool.network == net) or pool.name == item:
                match = pool
                break
        if match is None:
            raise PoolError(f"{family}: IP pool {item!r} does not exist (no pool with that name or CIDR)")
        if match.version != version:
            raise PoolError(f"{family}: IP pool {match.describe()} is an IPv{match.version} pool")
        if match.disabled:
            raise PoolError(f"{family}: IP pool {match.describe()} is disabled")
        if match not in out:
            out.append(match)
    return out


def usable_pools(
    backend: Backend,
    node: str,
    version: int,
    requested: list[str] | None = None,
    namespace_labels: dict[str, str] | None = None,
    pools: list[Pool] | None = None,
) -> PoolChoice:
    """The pools an automatic assignment on ``node`` may use, best first.

    Raises :class:`PoolError` naming what is missing when there are none.
    """
    all_pools = load_pools(backend) if pools is None else pools
    if requested:
        candidates = resolve_requested(all_pools, requested, version)
    else:
        candidates = [
            p for p in all_pools if p.version == version and not p.disabled and p.assignment_mode == "Automatic"
        ]
        if not candidates:
            present = [p.describe() for p in all_pools if p.version == version]
            if present:
                raise PoolError(
                    f"no enabled IPv{version} pool with assignmentMode Automatic "
                    f"(present but unusable: {', '.join(present)})"
                )
            raise PoolError(f"no IPv{version} IP pool is configured: create an IPPool with an IPv{version} CIDR")
    usable = [p for p in candidates if WORKLOAD in p.allowed_uses]
    if not usable:
        raise PoolError(
            f"no IPv{version} pool allows the Workload use "
            f"(candidates: {', '.join(p.describe() for p in candidates)})"
        )
    labels: dict[str, str] | None = None
    selected = []
    for pool in usable:
        if not _trivial(pool.node_selector):
            if labels is None:
                labels = node_labels(backend, node)
            if not _matches(pool.node_selector, labels):
                continue
        if not _trivial(pool.namespace_selector) and not _matches(pool.namespace_selector, namespace_labels or {}):
            continue
        selected.append(pool)
    if not selected:
        raise PoolError(
            f"no IPv{version} pool selects node {node!r}: the nodeSelector/namespaceSelector of "
            f"{', '.join(p.describe() for p in usable)} exclude it"
        )
    return PoolChoice(selected, all_pools)


def pool_for_ip(pools: list[Pool], ip: str) -> Pool | None:
    address = ipaddress.ip_address(ip)
    for pool in pools:
        if address.version == pool.version and address in pool.network:
            return pool
    return None
