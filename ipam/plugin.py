"""The calico-ipam CNI verbs: ADD, DEL, CHECK, STATUS, GC.

* ADD assigns one address per requested family (``assign_ipv4`` /
  ``assign_ipv6``; a dual-stack half-success is rolled back) or exactly the
  ``IP=`` of ``CNI_ARGS``, under the host lock, to handle
  ``<network name>.<containerID>`` with attributes node, timestamp,
  namespace, pod and interface. Result: ``ips`` with the block's mask, as
  upstream (``/32`` / ``/128`` for a requested IP), plus ``ipam.routes``.
* DEL releases by handle (and upstream's legacy handle); releasing what is
  not there succeeds.
* CHECK verifies the handle owns every address of ``prevResult``.
* STATUS: the datastore answers and the usable pools have a free address.
* GC releases this node's handles absent from ``cni.dev/valid-attachments``.

Error codes: 102 no usable pool / exhausted, 103 requested address in use,
11 datastore unreachable or too contended (try again later), 100 other
datastore failures, 105 CHECK mismatch, 50 STATUS not ready.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from cni.errors import (
    ADDRESS_IN_USE,
    CHECK_FAILED,
    DATASTORE_ERROR,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    NO_ADDRESSES,
    PLUGIN_NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CNIError,
)
from cni.skel import CmdArgs, convert_result, upgrade_result

log = logging.getLogger("calico-ipam")

T = TypeVar("T")
RELEASE_TIMEOUT = 90.0
GC_TIMEOUT = 90.0


@dataclass
class Context:
    conf: Any  # cni.netconf.NetConf
    node: str
    backend: Any  # datastore.backend.Backend
    handle_id: str
    namespace: str | None
    pod: str | None

    @property
    def ipam_extra(self) -> dict[str, Any]:
        ipam = self.conf.ipam
        return dict(ipam.extra) if ipam is not None else {}

    @property
    def release_empty_for(self) -> str | None:
        """``ipam.release_empty_blocks`` (pycalico extension, default off as
        upstream): a block left empty by a release loses this host's affinity."""
        return self.node if _truthy(self.ipam_extra.get("release_empty_blocks")) else None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _timestamp() -> str:
    # Upstream: Go's time.Now().UTC().String().
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def _context(args: CmdArgs) -> Context:
    from cni.logsetup import setup_logging
    from cni import hosting
    from cni.netconf import parse_netconf
    from datastore.config import DatastoreConfig, node_name

    conf = parse_netconf(args.conf)
    setup_logging(conf.log_level, conf.log_file_path, "calico-ipam")
    try:
        node = node_name(conf.nodename, conf.nodename_file, conf.nodename_file_optional)
    except OSError as exc:
        raise CNIError(INVALID_NETWORK_CONFIG, "cannot determine the node name", str(exc)) from None
    try:
        backend = hosting.connect(DatastoreConfig.from_netconf(args.conf))
    except ValueError as exc:
        raise CNIError(INVALID_NETWORK_CONFIG, "cannot use the configured datastore", str(exc)) from None
    cni_args = args.cni_args
    namespace = cni_args.get("K8S_POD_NAMESPACE") or None
    pod = cni_args.get("K8S_POD_NAME") or None
    return Context(conf, node, backend, f"{conf.name}.{args.container_id}", namespace, pod)


def _mapped(fn: Callable[[], T]) -> T:
    """Run ``fn`` turning IPAM and datastore failures into CNI errors."""
    from datastore.errors import DatastoreError, Unavailable

    from ipam.errors import AddressInUseError, NoAddressesError, RetriesExhausted

    try:
        return fn()
    except CNIError:
        raise
    except AddressInUseError as exc:
        raise CNIError(ADDRESS_IN_USE, str(exc)) from None
    except NoAddressesError as exc:
        raise CNIError(NO_ADDRESSES, str(exc)) from None
    except RetriesExhausted as exc:
        raise CNIError(TRY_AGAIN_LATER, "IPAM datastore too contended, try again later", str(exc)) from None
    except Unavailable as exc:
        raise CNIError(TRY_AGAIN_LATER, "datastore unavailable, try again later", str(exc)) from None
    except DatastoreError as exc:
        raise CNIError(DATASTORE_ERROR, "datastore error", str(exc)) from None


def _lock(ctx: Context):  # type: ignore[no-untyped-def]
    from cni import hosting
    from ipam.lock import HostLock

    lock = HostLock(ctx.conf.ipam_lock_file)
    if hosting.ipam_lock is not None:  # inside the node's CNI service
        return hosting.ipam_lock(ctx.conf.ipam_lock_file, lock)
    return lock


# -- Kubernetes hook ---------------------------------------------------------------


@dataclass
class PodOverrides:
    ipv4_pools: list[str] | None = None
    ipv6_pools: list[str] | None = None
    namespace_labels: dict[str, str] | None = None


def pod_overrides(ctx: Context) -> PodOverrides:
    """Pod/namespace annotations ``cni.projectcalico.org/ipv4pools`` /
    ``ipv6pools`` (and ``ipAddrs``, which the ``calico`` plugin turns into
    ``IP=``) and namespace labels for pool ``namespaceSelector``s. They come
    from the Kubernetes API, so only with the Kubernetes datastore: not
    implemented yet, nothing overrides the netconf."""
    return PodOverrides()


# -- ADD ---------------------------------------------------------------------------


def _routes(ctx: Context) -> list[dict[str, Any]]:
    routes = ctx.ipam_extra.get("routes") or []
    if not isinstance(routes, list):
        raise CNIError(INVALID_NETWORK_CONFIG, "ipam.routes must be a list of {\"dst\": ..., \"gw\": ...}")
    out = []
    for route in routes:
        if not isinstance(route, dict) or "dst" not in route:
            raise CNIError(INVALID_NETWORK_CONFIG, f"invalid ipam.routes entry {route!r}: needs dst")
        try:
            ipaddress.ip_network(route["dst"], strict=False)
            if route.get("gw"):
                ipaddress.ip_address(route["gw"])
        except ValueError as exc:
            raise CNIError(INVALID_NETWORK_CONFIG, f"invalid ipam.routes entry {route!r}", str(exc)) from None
        out.append({k: route[k] for k in ("dst", "gw") if route.get(k)})
    return out


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    ctx = _context(args)
    requested_ip = args.cni_args.get("IP") or None
    if requested_ip:
        try:
            requested_ip = str(ipaddress.ip_address(requested_ip))
        except ValueError:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid IP={requested_ip!r} in CNI_ARGS") from None
    routes = _routes(ctx)
    attrs = {"node": ctx.node, "timestamp": _timestamp(), "interface": args.ifname}
    if ctx.pod:
        attrs["pod"] = ctx.pod
        attrs["namespace"] = ctx.namespace or "default"
    ipam = ctx.conf.ipam
    want4 = ipam.wants_ipv4() if ipam is not None else True
    want6 = ipam.wants_ipv6() if ipam is not None else False
    if not requested_ip and not (want4 or want6):
        raise CNIError(INVALID_NETWORK_CONFIG, "ipam.assign_ipv4 and ipam.assign_ipv6 are both false: nothing to assign")
    overrides = pod_overrides(ctx)
    log.info("ADD %s on %s: IPv4=%s IPv6=%s IP=%s", ctx.handle_id, ctx.node, want4, want6, requested_ip)

    def assign() -> list[Any]:
        from ipam.allocator import Allocator
        from ipam.release import release_ips

        allocator = Allocator(ctx.backend, ctx.node)
        pools = None if requested_ip else allocator.preload()
        with _lock(ctx):
            allocator.restart_deadline()
            if requested_ip:
                return [allocator.assign_ip(requested_ip, ctx.handle_id, attrs)]
            got: list[Any] = []
            try:
                if want4:
                    got += allocator.auto_assign(
                        4, ctx.handle_id, attrs,
                        requested_pools=overrides.ipv4_pools or (ipam.ipv4_pools if ipam else None),
                        namespace_labels=overrides.namespace_labels, pools=pools,
                    )
                if want6:
                    got += allocator.auto_assign(
                        6, ctx.handle_id, attrs,
                        requested_pools=overrides.ipv6_pools or (ipam.ipv6_pools if ipam else None),
                        namespace_labels=overrides.namespace_labels, pools=pools,
                    )
            except BaseException:
                if got:
                    log.info("releasing %s: the other family could not be assigned", [a.address for a in got])
                    try:
                        release_ips(allocator.store, [(str(a.ip), a.block_cidr) for a in got], allocator.deadline)
                    except Exception as exc:  # noqa: BLE001 - DEL by handle will clean up
                        log.error("could not release %s: %s", [a.address for a in got], exc)
                raise
            return got

    try:
        assignments = _mapped(assign)
    finally:
        ctx.backend.close()
    if requested_ip:
        ip = assignments[0].ip
        addresses = [f"{ip}/{ip.max_prefixlen}"]
    else:
        addresses = [a.address for a in assignments]
    log.info("ADD %s assigned %s", ctx.handle_id, addresses)
    result: dict[str, Any] = {"cniVersion": ctx.conf.cni_version, "ips": [{"address": a} for a in addresses]}
    if routes:
        result["routes"] = routes
    return convert_result(result, ctx.conf.cni_version)


# -- DEL ---------------------------------------------------------------------------


def cmd_del(args: CmdArgs) -> None:
    ctx = _context(args)
    legacy = f"{ctx.namespace}.{ctx.pod}" if ctx.pod and ctx.namespace else args.container_id

    def release() -> None:
        from ipam.release import release_by_handle
        from ipam.retry import Deadline
        from ipam.store import Store

        store = Store(ctx.backend)
        deadline = Deadline(RELEASE_TIMEOUT)
        with _lock(ctx):
            ids = [ctx.handle_id] + ([legacy] if legacy and legacy != ctx.handle_id else [])
            found = store.get_handles(ids)  # both in one round trip where the datastore allows
            result = release_by_handle(store, ctx.handle_id, deadline, release_empty_for=ctx.release_empty_for,
                                       current=found[ctx.handle_id])
            if not result.found:
                log.info("DEL %s: no such handle (already released)", ctx.handle_id)
            for other in ids[1:]:
                release_by_handle(store, other, deadline, release_empty_for=ctx.release_empty_for,
                                  current=found[other])

    try:
        _mapped(release)
    finally:
        ctx.backend.close()
    return None


# -- CHECK -------------------------------------------------------------------------


def cmd_check(args: CmdArgs) -> None:
    ctx = _context(args)
    prev = ctx.conf.prev_result
    if not prev:
        raise CNIError(INVALID_NETWORK_CONFIG, "CHECK needs prevResult")
    addresses = [str(ipaddress.ip_interface(ip["address"]).ip) for ip in upgrade_result(prev).get("ips", [])]
    if not addresses:
        raise CNIError(CHECK_FAILED, "prevResult has no IP addresses to check")

    def verify() -> None:
        from datastore.errors import NotFound

        from ipam import blocks as blk
        from ipam.store import Store

        store = Store(ctx.backend)
        try:
            handle = store.get_handle(ctx.handle_id).value
        except NotFound:
            raise CNIError(CHECK_FAILED, f"IPAM handle {ctx.handle_id} does not exist: "
                                         f"{', '.join(addresses)} are not allocated to this container") from None
        for address in addresses:
            ip = ipaddress.ip_address(address)
            cidr = next((c for c in handle.block if ip in ipaddress.ip_network(c)), None)
            if cidr is None:
                raise CNIError(CHECK_FAILED, f"{address} is not allocated to {ctx.handle_id}")
            try:
                block = store.get_block(cidr).value
            except NotFound:
                raise CNIError(CHECK_FAILED, f"block {cidr} holding {address} does not exist") from None
            owner = blk.handle_of(block, blk.ordinal_of(block, ip))
            if owner != ctx.handle_id:
                raise CNIError(CHECK_FAILED, f"{address} is allocated to {owner or 'nobody'}, not {ctx.handle_id}")

    try:
        _mapped(verify)
    finally:
        ctx.backend.close()
    return None


# -- STATUS ------------------------------------------------------------------------


def cmd_status(args: CmdArgs) -> None:
    ctx = _context(args)

    def status() -> None:
        from datastore.errors import DatastoreError

        from ipam.allocator import Allocator
        from ipam.errors import NoAddressesError

        try:
            ctx.backend.ping()
        except DatastoreError as exc:
            raise CNIError(PLUGIN_NOT_AVAILABLE, "the datastore is unreachable", str(exc)) from None
        ipam = ctx.conf.ipam
        families = []
        if ipam is None or ipam.wants_ipv4():
            families.append((4, ipam.ipv4_pools if ipam else None))
        if ipam is not None and ipam.wants_ipv6():
            families.append((6, ipam.ipv6_pools))
        allocator = Allocator(ctx.backend, ctx.node)
        for version, requested in families:
            try:
                if not allocator.available(version, requested_pools=requested):
                    raise CNIError(PLUGIN_NOT_AVAILABLE, f"no free IPv{version} address for node {ctx.node}")
            except NoAddressesError as exc:
                raise CNIError(PLUGIN_NOT_AVAILABLE, str(exc)) from None
            except DatastoreError as exc:
                raise CNIError(PLUGIN_NOT_AVAILABLE, "the datastore failed", str(exc)) from None

    try:
        _mapped(status)
    finally:
        ctx.backend.close()
    return None


# -- GC ----------------------------------------------------------------------------


def cmd_gc(args: CmdArgs) -> None:
    ctx = _context(args)
    # libcni sends null when the runtime knows no attachment of this network
    # (cnitool gc): then nothing of this network on this node is valid.
    raw = args.conf.get("cni.dev/valid-attachments") or []
    if not isinstance(raw, list):
        raise CNIError(INVALID_NETWORK_CONFIG, "cni.dev/valid-attachments must be a list")
    valid: set[tuple[str, str]] = set()
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CNIError(INVALID_NETWORK_CONFIG, f"invalid cni.dev/valid-attachments entry {item!r}")
        valid.add((item["containerID"], str(item.get("ifname") or "")))

    def collect() -> None:
        from ipam.gc import gc
        from ipam.retry import Deadline
        from ipam.store import Store

        with _lock(ctx):
            gc(Store(ctx.backend), ctx.node, ctx.conf.name, valid, Deadline(GC_TIMEOUT))

    try:
        _mapped(collect)
    finally:
        ctx.backend.close()
    return None


HANDLERS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}
