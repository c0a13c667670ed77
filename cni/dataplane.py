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


def _iproute():  # type: ignore[no-untyped-def]
    from pyroute2 import IPRoute

    return IPRoute()


def _netns_iproute(netns: str):  # type: ignore[no-untyped-def]
    from pyroute2 import IPRoute

    if not os.path.exists(netns):
        raise CNIError(DATAPLANE_ERROR, f"network namespace {netns} does not exist")
    return IPRoute(netns=netns, flags=0)  # flags=0: never create a missing netns


def _error(step: str, exc: BaseException) -> CNIError:
    return CNIError(DATAPLANE_ERROR, f"failed to {step}", str(exc))


def setup(pod: PodNetwork) -> PodNetwork:
    """Create and configure the pod's interface; returns ``pod`` with the
    container MAC filled in. Raises CNIError; the caller rolls back."""
    ipr = _iproute()
    try:
        existing = ipr.link_lookup(ifname=pod.host_ifname)
        if existing:
            # Left over from an earlier attempt for this workload: replace it.
            log.info("deleting stale host interface %s", pod.host_ifname)
            ipr.link("del", index=existing[0])
        try:
            # Create the peer straight in the pod's netns (no move: avoids
            # rtnl_lock + RCU waits, see calico PR 7705).
            fd = os.open(pod.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link(
                    "add",
                    ifname=pod.host_ifname,
                    kind="veth",
                    peer={"ifname": pod.ifname, "net_ns_fd": fd},
                )
            finally:
                os.close(fd)
        except FileNotFoundError as exc:
            raise CNIError(DATAPLANE_ERROR, f"network namespace {pod.netns} does not exist") from exc
        except Exception as exc:  # noqa: BLE001 - netlink errors
            if getattr(exc, "code", None) == errno.EEXIST:
                raise CNIError(DATAPLANE_ERROR, f"interface {pod.ifname} already exists in {pod.netns}") from exc
            raise _error(f"create veth {pod.host_ifname}", exc) from exc
        host_index = ipr.link_lookup(ifname=pod.host_ifname)[0]
        try:
            ipr.link("set", index=host_index, address=HOST_MAC, mtu=pod.mtu)
            _configure_host_sysctls(pod)
            ipr.link("set", index=host_index, state="up")
        except CNIError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _error(f"configure host interface {pod.host_ifname}", exc) from exc
        run_in_netns(pod.netns, lambda: _configure_container(pod))
        for address in pod.addresses:
            _add_host_route(ipr, host_index, pod.host_ifname, address)
    finally:
        ipr.close()
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
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=pod.ifname)
        if not links:
            raise CNIError(DATAPLANE_ERROR, f"interface {pod.ifname} missing in {pod.netns}")
        index = links[0]
        try:
            if pod.ipv6:
                for path in ("all", "default", "lo", pod.ifname):
                    write_sysctl(f"net/ipv6/conf/{path}/disable_ipv6", "0")
                write_sysctl(f"net/ipv6/conf/{pod.ifname}/accept_dad", "0")
            ipr.link("set", index=index, mtu=pod.mtu, state="up")
            lo = ipr.link_lookup(ifname="lo")
            if lo:
                ipr.link("set", index=lo[0], state="up")
            for address in pod.addresses:
                ip, prefix = address.split("/")
                ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
            if pod.ipv4:
                ipr.route("add", dst=f"{IPV4_GATEWAY}/32", oif=index, scope=SCOPE_LINK, family=AF_INET)
                ipr.route("add", dst="0.0.0.0/0", gateway=IPV4_GATEWAY, oif=index, family=AF_INET)
                write_sysctl("net/ipv4/ip_forward", "1" if pod.allow_ip_forwarding else "0")
            if pod.ipv6:
                ipr.route("add", dst="::/0", gateway=IPV6_GATEWAY, oif=index, family=AF_INET6)
                write_sysctl("net/ipv6/conf/all/forwarding", "1" if pod.allow_ip_forwarding else "0")
            pod.container_mac = ipr.get_links(index)[0].get("address")
        except CNIError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _error(f"configure {pod.ifname} in {pod.netns}", exc) from exc


def _add_host_route(ipr, host_index: int, host_ifname: str, address: str) -> None:  # type: ignore[no-untyped-def]
    network = ipaddress.ip_interface(address).ip
    family = AF_INET6 if network.version == 6 else AF_INET
    dst = f"{network}/{network.max_prefixlen}"
    try:
        ipr.route("add", dst=dst, oif=host_index, scope=SCOPE_LINK, family=family)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "code", None) != errno.EEXIST:
            raise _error(f"add host route {dst} dev {host_ifname}", exc) from exc
        routes = ipr.route("get", dst=str(network), family=family)
        oif = routes[0].get("RTA_OIF") if routes else None
        if oif != host_index:
            other = ipr.get_links(oif)[0].get("ifname") if oif else "?"
            raise CNIError(
                DATAPLANE_ERROR,
                f"route to {dst} already exists via another interface {other}",
            ) from exc


def teardown(host_ifname: str, netns: str, ifname: str) -> None:
    """Remove the pod's interface. Missing netns or link is success."""
    deleted = False
    if netns and os.path.exists(netns):
        def delete_inside() -> bool:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                links = ipr.link_lookup(ifname=ifname)
                if links:
                    ipr.link("del", index=links[0])
                    return True
            return False

        try:
            deleted = run_in_netns(netns, delete_inside)
        except OSError as exc:
            log.info("netns %s unusable (%s): treating as gone", netns, exc)
    with _iproute() as ipr:
        links = ipr.link_lookup(ifname=host_ifname)
        if links and not deleted:
            try:
                ipr.link("del", index=links[0])
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "code", None) != errno.ENODEV:
                    raise _error(f"delete {host_ifname}", exc) from exc


def host_link_exists(host_ifname: str) -> bool:
    with _iproute() as ipr:
        return bool(ipr.link_lookup(ifname=host_ifname))


def check(pod: PodNetwork, expected_mac: str | None) -> None:
    """Compare the live interface, addresses and routes with what ADD made;
    raise CNIError(CHECK_FAILED) naming the first difference."""
    with _iproute() as ipr:
        host = ipr.link_lookup(ifname=pod.host_ifname)
        if not host:
            raise CNIError(CHECK_FAILED, f"host interface {pod.host_ifname} is missing")
        host_index = host[0]
        for address in pod.addresses:
            ip = ipaddress.ip_interface(address).ip
            family = AF_INET6 if ip.version == 6 else AF_INET
            routes = ipr.get_routes(family=family, dst=str(ip), dst_len=ip.max_prefixlen)
            if not any(r.get("RTA_OIF") == host_index for r in routes):
                raise CNIError(CHECK_FAILED, f"host route {ip} dev {pod.host_ifname} is missing")
    if not os.path.exists(pod.netns):
        raise CNIError(CHECK_FAILED, f"network namespace {pod.netns} is missing")

    def inside() -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=pod.ifname)
            if not links:
                raise CNIError(CHECK_FAILED, f"interface {pod.ifname} is missing in {pod.netns}")
            index = links[0]
            link = ipr.get_links(index)[0]
            mac = link.get("address")
            if expected_mac and mac and mac.lower() != expected_mac.lower():
                raise CNIError(CHECK_FAILED, f"{pod.ifname} has MAC {mac}, expected {expected_mac}")
            have = {
                f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)
            }
            for address in pod.addresses:
                normal = str(ipaddress.ip_interface(address))
                if normal not in have:
                    raise CNIError(CHECK_FAILED, f"address {normal} is missing on {pod.ifname}")
            if pod.ipv4:
                defaults = [
                    r for r in ipr.get_routes(family=AF_INET)
                    if r["dst_len"] == 0 and r.get("RTA_GATEWAY") == IPV4_GATEWAY
                ]
                if not defaults:
                    raise CNIError(CHECK_FAILED, f"default route via {IPV4_GATEWAY} is missing in the pod")
            if pod.ipv6:
                defaults = [
                    r for r in ipr.get_routes(family=AF_INET6)
                    if r["dst_len"] == 0 and r.get("RTA_GATEWAY") == IPV6_GATEWAY
                ]
                if not defaults:
                    raise CNIError(CHECK_FAILED, f"default route via {IPV6_GATEWAY} is missing in the pod")

    run_in_netns(pod.netns, inside)


__all__ = ["PodNetwork", "setup", "teardown", "check", "host_link_exists", "read_sysctl", "time"]
