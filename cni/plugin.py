"""The ``calico`` CNI plugin's commands: ADD, DEL, CHECK, STATUS, GC."""
from __future__ import annotations

import ipaddress
import json
import logging
from contextlib import contextmanager
from typing import Any, Iterator

from cni import dataplane
from cni import hosting
from cni.errors import (
    DATASTORE_ERROR,
    INVALID_NETWORK_CONFIG,
    PLUGIN_NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CNIError,
)
from cni.ipam_exec import exec_ipam
from cni.logsetup import setup_logging
from cni.names import Workload
from cni.netconf import NetConf, parse_netconf
from cni.skel import CmdArgs, convert_result, upgrade_result
from datastore.backend import Backend
from datastore.config import KUBERNETES, DatastoreConfig, node_name
from datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound, Unavailable
from datastore.keys import ResourceKey

log = logging.getLogger("calico")

ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAMESPACE_LABEL = "projectcalico.org/namespace"


# -- shared plumbing --------------------------------------------------------------


class Context:
    """What every command needs: the parsed config, the workload, the datastore."""

    def __init__(self, args: CmdArgs) -> None:
        self.args = args
        self.conf: NetConf = parse_netconf(args.conf)
        setup_logging(self.conf.log_level, self.conf.log_file_path, f"calico {args.command}")
        try:
            self.node = node_name(
                self.conf.nodename, self.conf.nodename_file, self.conf.nodename_file_optional
            )
        except OSError as exc:
            raise CNIError(INVALID_NETWORK_CONFIG, "cannot read nodename_file", str(exc)) from None
        self.workload = Workload.from_args(self.node, args.container_id, args.ifname, args.cni_args)
        self.datastore_type = DatastoreConfig.from_netconf(args.conf).datastore_type
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            try:
                self._backend = hosting.connect(DatastoreConfig.from_netconf(self.args.conf))
            except ValueError as exc:
                raise CNIError(INVALID_NETWORK_CONFIG, str(exc)) from None
        return self._backend

    @property
    def wep_key(self) -> ResourceKey:
        return ResourceKey("WorkloadEndpoint", self.workload.endpoint_name, self.workload.namespace)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


@contextmanager
def datastore_errors(action: str) -> Iterator[None]:
    """Map datastore failures to CNI errors (11 when retrying may help)."""
    try:
        yield
    except Unavailable as exc:
        raise CNIError(TRY_AGAIN_LATER, f"datastore unavailable while {action}", str(exc)) from None
    except DatastoreError as exc:
        raise CNIError(DATASTORE_ERROR, f"datastore error while {action}", str(exc)) from None


def _get_or_none(backend: Backend, key: ResourceKey) -> Any:
    try:
        return backend.get(key)
    except NotFound:
        return None


def _check_ready(ctx: Context) -> None:
    info = _get_or_none(ctx.backend, ResourceKey("ClusterInformation", "default"))
    if info is not None and info.value.get("spec", {}).get("datastoreReady") is False:
        raise CNIError(TRY_AGAIN_LATER, "Calico is currently not ready to process requests")


def _ipam_type(ctx: Context) -> str:
    if ctx.conf.ipam is None:
        raise CNIError(INVALID_NETWORK_CONFIG, "network config has no 'ipam' section")
    return ctx.conf.ipam.type


def _pod_addresses(ipam_result: dict[str, Any]) -> list[str]:
    """IPAM's addresses narrowed to /32 and /128 (pods own single addresses)."""
    addresses = []
    for ip in ipam_result.get("ips") or []:
        iface = ipaddress.ip_interface(ip["address"])
        addresses.append(f"{iface.ip}/{iface.ip.max_prefixlen}")
    if not addresses:
        raise CNIError(INVALID_NETWORK_CONFIG, "IPAM plugin returned no addresses")
    return addresses


def _result(ctx: Context, pod: dataplane.PodNetwork) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    if pod.ipv4:
        routes.append({"dst": "0.0.0.0/0", "gw": dataplane.IPV4_GATEWAY})
    if pod.ipv6:
        routes.append({"dst": "::/0", "gw": dataplane.IPV6_GATEWAY})
    result: dict[str, Any] = {
        "interfaces": [
            {"name": pod.host_ifname, "mac": dataplane.HOST_MAC},
            {"name": pod.ifname, "mac": pod.container_mac, "sandbox": pod.netns},
        ],
        "ips": [{"address": a, "interface": 1} for a in pod.addresses],
        "routes": routes,
        "dns": ctx.conf.dns.to_result() if ctx.conf.dns else {},
    }
    return convert_result(result, ctx.conf.cni_version)


def _pod_network(ctx: Context, addresses: list[str]) -> dataplane.PodNetwork:
    return dataplane.PodNetwork(
        host_ifname=ctx.workload.host_ifname,
        ifname=ctx.args.ifname,
        netns=ctx.args.netns,
        mtu=ctx.conf.mtu,
        addresses=addresses,
        allow_ip_forwarding=ctx.conf.container_settings.allow_ip_forwarding,
    )


def _workload_endpoint(ctx: Context, pod: dataplane.PodNetwork) -> dict[str, Any]:
    wl = ctx.workload
    spec: dict[str, Any] = {
        "orchestrator": wl.orchestrator,
        "node": wl.node,
        "containerID": wl.container_id,
        "endpoint": wl.ifname,
        "interfaceName": pod.host_ifname,
        "mac": pod.container_mac,
        "ipNetworks": pod.addresses,
        "profiles": [f"kns.{wl.namespace}"] if wl.orchestrator == "k8s" else [ctx.conf.name],
    }
    if wl.orchestrator == "k8s":
        spec["pod"] = wl.pod
    else:
        spec["workload"] = wl.container_id
    labels = {ORCHESTRATOR_LABEL: wl.orchestrator, NAMESPACE_LABEL: wl.namespace}
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": wl.endpoint_name, "namespace": wl.namespace, "labels": labels},
        "spec": spec,
    }


def _ensure_network_profile(ctx: Context) -> None:
    """Plain CNI workloads get a Profile named after the network (created once,
    never updated), as upstream: members may talk to each other; egress open."""
    if ctx.workload.orchestrator != "cni" or ctx.conf.policy.type:
        return
    name = ctx.conf.name
    key = ResourceKey("Profile", name)
    if _get_or_none(ctx.backend, key) is not None:
        return
    profile = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {
            "ingress": [{"action": "Allow", "source": {"selector": f"has({name})"}}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {name: ""},
        },
    }
    try:
        ctx.backend.create(key, profile)
    except AlreadyExists:
        pass


# -- ADD ---------------------------------------------------------------------------


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    ctx = Context(args)
    try:
        return _add(ctx)
    finally:
        ctx.close()


def _add(ctx: Context) -> dict[str, Any]:
    ipam_type = _ipam_type(ctx)
    if ctx.datastore_type == KUBERNETES and ctx.workload.orchestrator != "k8s":
        # Upstream's KDD stores endpoints only as pods: nothing to attach a
        # plain CNI container to. Fail before any IPAM or dataplane work.
        raise CNIError(INVALID_NETWORK_CONFIG, "the kubernetes datastore handles Kubernetes pods only",
                       "CNI_ARGS must name the pod (K8S_POD_NAMESPACE and K8S_POD_NAME)")
    with datastore_errors("checking the cluster and existing endpoint"):
        _check_ready(ctx)
        existing = _get_or_none(ctx.backend, ctx.wep_key)
    if (existing is not None and existing.value["spec"].get("containerID") == ctx.args.container_id
            and existing.value["spec"].get("ipNetworks")):
        # (In the kubernetes datastore a pod stays a WorkloadEndpoint after DEL,
        # with its addresses blanked: that is not a repeated ADD.)
        # A repeated ADD for the same attachment: same addresses, nothing new allocated.
        spec = existing.value["spec"]
        pod = _pod_network(ctx, list(spec.get("ipNetworks") or []))
        if dataplane.host_link_exists(pod.host_ifname):
            pod.container_mac = spec.get("mac", "")
            log.info("ADD repeated for %s: returning the existing endpoint", ctx.workload.endpoint_name)
            return _result(ctx, pod)
        log.info("ADD repeated for %s but its interface is gone: recreating", ctx.workload.endpoint_name)
        return _setup_and_record(ctx, pod, release_on_failure=None)

    ipam_result = exec_ipam(ctx.args, ipam_type, "ADD", backend=ctx.backend)
    if ipam_result is None:
        raise CNIError(INVALID_NETWORK_CONFIG, f"IPAM plugin {ipam_type} returned nothing")
    try:
        pod = _pod_network(ctx, _pod_addresses(upgrade_result(ipam_result)))
    except Exception:
        _release(ctx, ipam_type)
        raise
    return _setup_and_record(ctx, pod, release_on_failure=ipam_type)


def _setup_and_record(ctx: Context, pod: dataplane.PodNetwork, release_on_failure: str | None) -> dict[str, Any]:
    wrote_endpoint = False
    try:
        dataplane.setup(pod)
        with datastore_errors("writing the workload endpoint"):
            _ensure_network_profile(ctx)
            ctx.backend.apply(ctx.wep_key, _workload_endpoint(ctx, pod))
            wrote_endpoint = True
        log.info("ADD %s: %s on %s", ctx.workload.endpoint_name, pod.addresses, pod.host_ifname)
        return _result(ctx, pod)
    except BaseException:
        log.exception("ADD failed for %s: rolling back", ctx.workload.endpoint_name)
        _rollback(ctx, pod, release_on_failure, wrote_endpoint)
        raise


def _rollback(ctx: Context, pod: dataplane.PodNetwork, ipam_type: str | None, wrote_endpoint: bool) -> None:
    try:
        dataplane.teardown(pod.host_ifname, pod.netns, pod.ifname)
    except Exception:  # noqa: BLE001 - best effort, keep the original error
        log.exception("rollback: could not remove %s", pod.host_ifname)
    if wrote_endpoint:
        try:
            ctx.backend.delete(ctx.wep_key)
        except Exception:  # noqa: BLE001
            log.exception("rollback: could not delete endpoint %s", ctx.wep_key)
    if ipam_type:
        _release(ctx, ipam_type)


def _release(ctx: Context, ipam_type: str) -> None:
    try:
        exec_ipam(ctx.args, ipam_type, "DEL", backend=ctx.backend)
    except Exception:  # noqa: BLE001
        log.exception("rollback: IPAM release failed for %s", ctx.args.container_id)


# -- DEL ---------------------------------------------------------------------------


def cmd_del(args: CmdArgs) -> None:
    ctx = Context(args)
    try:
        _del(ctx)
    finally:
        ctx.close()


def _del(ctx: Context) -> None:
    stale_sandbox = False
    with datastore_errors("deleting the workload endpoint"):
        existing = _get_or_none(ctx.backend, ctx.wep_key)
        if existing is not None:
            owner = existing.value["spec"].get("containerID")
            if owner and owner != ctx.args.container_id:
                # The endpoint belongs to a newer sandbox of the same pod: keep it
                # and its host interface; clean only what this container had.
                stale_sandbox = True
                log.info("DEL %s: endpoint owned by %s, keeping it", ctx.args.container_id, owner)
            else:
                for _ in range(5):
                    try:
                        ctx.backend.delete(ctx.wep_key, existing.revision)
                        break
                    except NotFound:
                        break
                    except Conflict:
                        existing = _get_or_none(ctx.backend, ctx.wep_key)
                        if existing is None:
                            break
    if stale_sandbox:
        dataplane.teardown("", ctx.args.netns, ctx.args.ifname)
    else:
        dataplane.teardown(ctx.workload.host_ifname, ctx.args.netns, ctx.args.ifname)
    if ctx.conf.ipam is not None:
        exec_ipam(ctx.args, ctx.conf.ipam.type, "DEL", backend=ctx.backend)
    log.info("DEL %s done", ctx.workload.endpoint_name)


# -- CHECK -------------------------------------------------------------------------


def cmd_check(args: CmdArgs) -> None:
    ctx = Context(args)
    try:
        _check(ctx)
    finally:
        ctx.close()


def _check(ctx: Context) -> None:
    from cni.errors import CHECK_FAILED

    prev = ctx.conf.prev_result
    if not prev:
        raise CNIError(INVALID_NETWORK_CONFIG, "CHECK needs prevResult in the network config")
    prev = upgrade_result(prev)
    addresses = [
        str(ipaddress.ip_interface(ip["address"])) for ip in prev.get("ips") or []
    ]
    with datastore_errors("reading the workload endpoint"):
        existing = _get_or_none(ctx.backend, ctx.wep_key)
    if existing is None:
        raise CNIError(CHECK_FAILED, f"workload endpoint {ctx.workload.endpoint_name} does not exist")
    spec = existing.value["spec"]
    if spec.get("containerID") != ctx.args.container_id:
        raise CNIError(CHECK_FAILED, f"workload endpoint belongs to container {spec.get('containerID')}")
    recorded = sorted(spec.get("ipNetworks") or [])
    if sorted(addresses) != recorded:
        raise CNIError(CHECK_FAILED, f"prevResult addresses {addresses} differ from the endpoint's {recorded}")
    container_mac = next(
        (i.get("mac") for i in prev.get("interfaces") or [] if i.get("name") == ctx.args.ifname and i.get("sandbox")),
        None,
    )
    pod = _pod_network(ctx, addresses)
    dataplane.check(pod, container_mac)
    if ctx.conf.ipam is not None:
        exec_ipam(ctx.args, ctx.conf.ipam.type, "CHECK", backend=ctx.backend)


# -- STATUS / GC ---------------------------------------------------------------------


def cmd_status(args: CmdArgs) -> None:
    ctx = Context(args)
    try:
        try:
            ctx.backend.ping()
        except Unavailable as exc:
            raise CNIError(PLUGIN_NOT_AVAILABLE, "datastore is unreachable", str(exc)) from None
        if ctx.conf.ipam is not None:
            exec_ipam(ctx.args, ctx.conf.ipam.type, "STATUS")
    finally:
        ctx.close()


def cmd_gc(args: CmdArgs) -> None:
    """Remove this node's endpoints (and via IPAM, addresses) that are not in
    ``cni.dev/valid-attachments``."""
    ctx = Context(args)
    try:
        valid = {
            (a.get("containerID"), a.get("ifname"))
            for a in args.conf.get("cni.dev/valid-attachments") or []
            if isinstance(a, dict)
        }
        from datastore.keys import ListOptions

        with datastore_errors("listing workload endpoints"):
            # This node's endpoints only (kubernetes: a spec.nodeName field selector).
            endpoints = ctx.backend.list(ListOptions("WorkloadEndpoint", node=ctx.node)).items
            for kv in endpoints:
                spec = kv.value.get("spec", {})
                if spec.get("node") != ctx.node:
                    continue
                if (spec.get("containerID"), spec.get("endpoint")) in valid:
                    continue
                log.info("GC: removing endpoint %s (container %s)", kv.key, spec.get("containerID"))
                try:
                    ctx.backend.delete(kv.key, kv.revision)
                except (NotFound, Conflict):
                    continue
                if spec.get("interfaceName"):
                    dataplane.teardown(spec["interfaceName"], "", "")
        if ctx.conf.ipam is not None:
            exec_ipam(ctx.args, ctx.conf.ipam.type, "GC")
    finally:
        ctx.close()


HANDLERS = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
    "STATUS": cmd_status,
    "GC": cmd_gc,
}

__all__ = ["HANDLERS", "json"]
