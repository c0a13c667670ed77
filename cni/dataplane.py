"""Pod networking on Linux: the veth pair, addresses, routes and sysctls.

Calico's layout: the pod's ``eth0`` gets /32 (/128) addresses and a default
route via the link-local 169.254.1.1 (IPv6: the host veth's link-local
address); the host side ``caliXXXX`` has MAC ee:ee:ee:ee:ee:ee, answers ARP by
proxy, and the host routes each pod address to it.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from cni.errors import CHECK_FAILED, DATAPLANE_ERROR, CNIError
from cni.netlink import Netlink, NetlinkError
from cni.netns import read_sysctl, run_in_netns, write_sysctl

log = logging.getLogger(__name__)

HOST_MAC = "ee:ee:ee:ee:ee:ee"
IPV4_GATEWAY = "169.254.1.1"
IPV6_GATEWAY = "fe80::ecee:eeff:feee:eeee"  # link-local of HOST_MAC
SCOPE_LINK = 253
AF_INET, AF_INET6 = 2, 10


@dataclass
class PodNetwork:
    host_ifname: str
    ifname: str
    netns: str
    mtu: int
    addresses: list[str]  # "10.0.0.5/32", "fd00::5/128"
    allow_ip_forwarding: bool = False
    container_mac: str = ""
    routes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ipv4(self) -> list[str]:
        return [a for a in self.addresses if ":" not in a]

    @property
    def ipv6(self) -> list[str]:
        return [a for a in self.addresses if ":" in a]


def _error(step: str, exc: BaseException) -> CNIError:
    return CNIError(DATAPLANE_ERROR, f"failed to {step}", str(exc))


def setup(pod: PodNetwork) -> PodNetwork:
    """Create and configure the pod's interface; returns ``pod`` with the
    container MAC filled in. Raises CNIError; the caller rolls back."""
    with Netlink() as nl:
        try:
            existing = nl.link(pod.host_ifname)
            if existing is not None:
                # Left over from an earlier attempt for this workload: replace it.
                log.info("deleting stale host interface %s", pod.host_ifname)
                nl.del_link(existing.index, pod.host_ifname)
        except NetlinkError as exc:
            raise _error(f"replace stale host interface {pod.host_ifname}", exc) from exc
        try:
            # Create the peer straight in the pod's netns (no move: avoids
            # rtnl_lock + RCU waits, see calico PR 7705), MAC and MTU included.
            fd = os.open(pod.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                nl.add_veth(pod.host_ifname, pod.ifname, peer_netns_fd=fd, mac=HOST_MAC,
                            mtu=pod.mtu, peer_mtu=pod.mtu)
            finally:
                os.close(fd)
        except FileNotFoundError as exc:
            raise CNIError(DATAPLANE_ERROR, f"network namespace {pod.netns} does not exist") from exc
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                if nl.link(pod.host_ifname) is not None:
                    raise CNIError(DATAPLANE_ERROR, f"host interface {pod.host_ifname} already exists",
                                   str(exc)) from exc
                raise CNIError(DATAPLANE_ERROR, f"interface {pod.ifname} already exists in {pod.netns}",
                               str(exc)) from exc
            raise _error(f"create veth {pod.host_ifname}", exc) from exc
        try:
            host = nl.link(pod.host_ifname)
            if host is None:
                raise CNIError(DATAPLANE_ERROR, f"host interface {pod.host_ifname} vanished after creation")
            _configure_host_sysctls(pod)
            nl.set_link(host.index, up=True, label=pod.host_ifname)
        except NetlinkError as exc:
            raise _error(f"configure host interface {pod.host_ifname}", exc) from exc
        run_in_netns(pod.netns, lambda: _configure_container(pod))
        for address in pod.addresses:
            _add_host_route(nl, host.index, pod.host_ifname, address)
    return pod


def _configure_host_sysctls(pod: PodNetwork) -> None:
    name = pod.host_ifname
    settings = [(f"net/ipv6/conf/{name}/accept_ra", "0", False)]
    if pod.ipv4:
        settings += [
            (f"net/ipv4/conf/{name}/route_localnet", "1", True),
            (f"net/ipv4/neigh/{name}/proxy_delay", "0", True),
            (f"net/ipv4/conf/{name}/proxy_arp", "1", True),
            (f"net/ipv4/conf/{name}/forwarding", "1", True),
        ]
    if pod.ipv6:
        settings += [
            (f"net/ipv6/conf/{name}/disable_ipv6", "0", True),
            (f"net/ipv6/conf/{name}/accept_dad", "0", True),
            (f"net/ipv6/conf/{name}/proxy_ndp", "1", True),
            (f"net/ipv6/conf/{name}/forwarding", "1", True),
        ]
    for path, value, required in settings:
        try:
            write_sysctl(path, value)
        except OSError as exc:
            if required:
                raise _error(f"set sysctl {path}", exc) from exc
            log.warning("could not set %s: %s", path, exc)


def _configure_container(pod: PodNetwork) -> None:
    """Runs inside the pod's netns."""
    with Netlink() as nl:
        link = nl.link(pod.ifname)
        if link is None:
            raise CNIError(DATAPLANE_ERROR, f"interface {pod.ifname} missing in {pod.netns}")
        index = link.index
        try:
            if pod.ipv6:
                for path in ("all", "default", "lo", pod.ifname):
                    write_sysctl(f"net/ipv6/conf/{path}/disable_ipv6", "0")
                write_sysctl(f"net/ipv6/conf/{pod.ifname}/accept_dad", "0")
            if link.mtu != pod.mtu:
                nl.set_link(index, mtu=pod.mtu, label=pod.ifname)
            nl.set_link(index, up=True, label=pod.ifname)
            lo = nl.link("lo")
            if lo is not None and not lo.up:
                nl.set_link(lo.index, up=True, label="lo")
            for address in pod.addresses:
                ip, prefix = address.split("/")
                nl.add_address(index, ip, int(prefix), label=pod.ifname)
            if pod.ipv4:
                nl.add_route(IPV4_GATEWAY, 32, oif=index, scope=SCOPE_LINK, label=pod.ifname)
                nl.add_route("0.0.0.0", 0, gateway=IPV4_GATEWAY, oif=index, label=pod.ifname)
                write_sysctl("net/ipv4/ip_forward", "1" if pod.allow_ip_forwarding else "0")
            if pod.ipv6:
                nl.add_route("::", 0, gateway=IPV6_GATEWAY, oif=index, label=pod.ifname)
                write_sysctl("net/ipv6/conf/all/forwarding", "1" if pod.allow_ip_forwarding else "0")
            pod.container_mac = link.mac
        except (NetlinkError, OSError) as exc:
            raise _error(f"configure {pod.ifname} in {pod.netns}", exc) from exc


def _add_host_route(nl: Netlink, host_index: int, host_ifname: str, address: str) -> None:
    network = ipaddress.ip_interface(address).ip
    bits = network.max_prefixlen
    dst = f"{network}/{bits}"
    try:
        nl.add_route(str(network), bits, oif=host_index, scope=SCOPE_LINK, label=host_ifname)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise _error(f"add host route {dst} dev {host_ifname}", exc) from exc
        route = nl.get_route(str(network))
        oif = route.oif if route else None
        if oif != host_index:
            other = nl.link_by_index(oif) if oif else None
            raise CNIError(
                DATAPLANE_ERROR,
                f"route to {dst} already exists via another interface {other.name if other else '?'}",
            ) from exc


def teardown(host_ifname: str, netns: str, ifname: str) -> None:
    """Remove the pod's interface. Missing netns or link is success."""
    deleted = False
    if netns and os.path.exists(netns):
        def delete_inside() -> bool:
            with Netlink() as nl:
                link = nl.link(ifname)
                if link is None:
                    return False
                try:
                    nl.del_link(link.index, ifname)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise
                    return False
                return True

        try:
            deleted = run_in_netns(netns, delete_inside)
        except NetlinkError as exc:
            raise _error(f"delete {ifname} in {netns}", exc) from exc
        except OSError as exc:
            log.info("netns %s unusable (%s): treating as gone", netns, exc)
    if not host_ifname or deleted:
        return
    with Netlink() as nl:
        try:
            link = nl.link(host_ifname)
            if link is not None:
                nl.del_link(link.index, host_ifname)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise _error(f"delete {host_ifname}", exc) from exc


def host_link_exists(host_ifname: str) -> bool:
    with Netlink() as nl:
        return nl.link(host_ifname) is not None


def check(pod: PodNetwork, expected_mac: str | None) -> None:
    """Compare the live interface, addresses and routes with what ADD made;
    raise CNIError(CHECK_FAILED) naming the first difference."""
    with Netlink() as nl:
        host = nl.link(pod.host_ifname)
        if host is None:
            raise CNIError(CHECK_FAILED, f"host interface {pod.host_ifname} is missing")
        for address in pod.addresses:
            ip = ipaddress.ip_interface(address).ip
            family = AF_INET6 if ip.version == 6 else AF_INET
            routes = nl.routes(family)
            if not any(r.oif == host.index and r.dst_len == ip.max_prefixlen and r.dst is not None
                       and ipaddress.ip_address(r.dst) == ip for r in routes):
                raise CNIError(CHECK_FAILED, f"host route {ip} dev {pod.host_ifname} is missing")
    if not os.path.exists(pod.netns):
        raise CNIError(CHECK_FAILED, f"network namespace {pod.netns} is missing")

    def inside() -> None:
        with Netlink() as nl:
            link = nl.link(pod.ifname)
            if link is None:
                raise CNIError(CHECK_FAILED, f"interface {pod.ifname} is missing in {pod.netns}")
            mac = link.mac
            if expected_mac and mac and mac.lower() != expected_mac.lower():
                raise CNIError(CHECK_FAILED, f"{pod.ifname} has MAC {mac}, expected {expected_mac}")
            have = {str(ipaddress.ip_interface(a.cidr)) for a in nl.addresses(link.index)}
            for address in pod.addresses:
                normal = str(ipaddress.ip_interface(address))
                if normal not in have:
                    raise CNIError(CHECK_FAILED, f"address {normal} is missing on {pod.ifname}")
            for family, gateway in ((AF_INET, IPV4_GATEWAY), (AF_INET6, IPV6_GATEWAY)):
                if not (pod.ipv4 if family == AF_INET else pod.ipv6):
                    continue
                if not any(r.dst_len == 0 and r.gateway == gateway for r in nl.routes(family)):
                    raise CNIError(CHECK_FAILED, f"default route via {gateway} is missing in the pod")

    run_in_netns(pod.netns, inside)


__all__ = ["PodNetwork", "setup", "teardown", "check", "host_link_exists", "read_sysctl", "time"]
