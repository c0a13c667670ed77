"""Local workload routes, neighbour entries and interface sysctls.

For every local endpoint: ``<ip>/32 dev <iface> scope link`` (``/128`` for
IPv6), a permanent neighbour entry for the endpoint's MAC (IPv4), and the
host-side sysctls upstream Felix sets on workload interfaces. ``apply``
repairs what drifted: a missing route is added, a route pointing at the
wrong device replaced, a host route on a workload interface that no endpoint
owns removed (only on interfaces this Felix manages, so a CNI ADD in
progress on another interface is never disturbed).

Interfaces that do not exist yet are retried on the next pass.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from felix.calc.graph import LocalEndpoint

log = logging.getLogger(__name__)

AF_INET, AF_INET6 = 2, 10
SCOPE_LINK = 253
NUD_PERMANENT = 0x80
RTPROT_KERNEL = 2
MAIN_TABLE = 254

V4_SYSCTLS = (
    ("net/ipv4/conf/{}/rp_filter", "1"),
    ("net/ipv4/conf/{}/route_localnet", "1"),
    ("net/ipv4/conf/{}/proxy_arp", "1"),
    ("net/ipv4/neigh/{}/proxy_delay", "0"),
    ("net/ipv4/conf/{}/forwarding", "1"),
)
V6_SYSCTLS = (
    ("net/ipv6/conf/{}/accept_ra", "0"),
    ("net/ipv6/conf/{}/proxy_ndp", "1"),
    ("net/ipv6/conf/{}/forwarding", "1"),
)


@dataclass(frozen=True)
class _Want:
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    mac: Optional[str]


def read_sysctl(path: str) -> Optional[str]:
    try:
        with open(f"/proc/sys/{path}", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def write_sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w", encoding="ascii") as f:
        f.write(value)


class RouteManager:
    def __init__(self, protocol: int = 3, ipv6: bool = True, ip_forwarding: bool = True) -> None:
        self.protocol = protocol
        self.ipv6 = ipv6
        self.ip_forwarding = ip_forwarding
        self._want: dict[str, _Want] = {}  # iface -> desired
        self._owner: dict[str, str] = {}  # endpoint id -> iface
        self._managed: set[str] = set()  # every iface we ever managed
        self._dirty: set[str] = set()
        self._ipr: Any = None
        self.pending: set[str] = set()  # ifaces missing last time

    # -- inputs (same calls as the dataplane sink) ------------------------------------------

    def endpoint_update(self, ep: LocalEndpoint) -> None:
        old = self._owner.get(ep.endpoint_id)
        if old is not None and old != ep.iface:
            self._want.pop(old, None)
            self._dirty.add(old)
        self._owner[ep.endpoint_id] = ep.iface
        want = _Want(ep.ipv4, ep.ipv6 if self.ipv6 else (), ep.mac)
        if self._want.get(ep.iface) != want:
            self._want[ep.iface] = want
            self._dirty.add(ep.iface)
        self._managed.add(ep.iface)

    def endpoint_removed(self, endpoint_id: str) -> None:
        iface = self._owner.pop(endpoint_id, None)
        if iface is not None and iface not in self._owner.values():
            self._want.pop(iface, None)
            self._dirty.add(iface)

    # -- kernel ---------------------------------------------------------------------------

    def _iproute(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def apply(self, full: bool = False) -> list[str]:
        """Program dirty interfaces (all managed ones when ``full``); returns
        the repairs made."""
        ifaces = set(self._managed) if full else set(self._dirty) | self.pending
        self._dirty.clear()
        if not ifaces:
            return []
        repairs: list[str] = []
        if full and self.ip_forwarding:
            repairs += self._sysctls([("net/ipv4/ip_forward", "1")] +
                                     ([("net/ipv6/conf/all/forwarding", "1")] if self.ipv6 else []))
        try:
            ipr = self._iproute()
            links = {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}
            routes = self._host_routes(ipr)
        except Exception:  # noqa: BLE001 - netlink trouble: retry next time
            log.exception("reading routes failed")
            self.close()
            self._dirty |= ifaces
            return repairs
        self.pending = set()
        for iface in sorted(ifaces):
            index = links.get(iface)
            want = self._want.get(iface)
            if index is None:
                if want is not None:
                    self.pending.add(iface)
                else:
                    self._managed.discard(iface)
                continue
            try:
                repairs += self._sync_iface(ipr, iface, index, want, routes)
            except Exception as exc:  # noqa: BLE001
                log.warning("programming %s failed (will retry): %s", iface, exc)
                self._dirty.add(iface)
        return repairs

    def _host_routes(self, ipr: Any) -> dict[str, tuple[int, int]]:
        """Host routes in the main table: "ip/len" -> (oif, protocol)."""
        out: dict[str, tuple[int, int]] = {}
        for family, plen in ((AF_INET, 32), (AF_INET6, 128)):
            if family == AF_INET6 and not self.ipv6:
                continue
            for r in ipr.get_routes(family=family, table=MAIN_TABLE):
                if r["dst_len"] != plen:
                    continue
                dst = r.get_attr("RTA_DST")
                oif = r.get_attr("RTA_OIF")
                if dst is None or oif is None:
                    continue
                out[f"{dst}/{plen}"] = (oif, r["proto"])
        return out

    def _sync_iface(self, ipr: Any, iface: str, index: int, want: Optional[_Want],
                    routes: dict[str, tuple[int, int]]) -> list[str]:
        repairs: list[str] = []
        wanted: set[str] = set()
        if want is not None:
            wanted = {f"{a}/32" for a in want.ipv4} | {f"{a}/128" for a in want.ipv6}
            settings = []
            if want.ipv4:
                settings += [(p.format(iface), v) for p, v in V4_SYSCTLS]
            if want.ipv6:
                settings += [(p.format(iface), v) for p, v in V6_SYSCTLS]
            repairs += self._sysctls(settings)
        for dst in sorted(wanted):
            current = routes.get(dst)
            if current is not None and current[0] == index:
                continue
            net = ipaddress.ip_network(dst)
            ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=index,
                      scope=SCOPE_LINK, proto=self.protocol, table=MAIN_TABLE,
                      family=AF_INET if net.version == 4 else AF_INET6)
            routes[dst] = (index, self.protocol)
            repairs.append(f"route {dst} dev {iface}" + (" (was elsewhere)" if current else ""))
        for dst, (oif, proto) in list(routes.items()):
            if oif == index and dst not in wanted and proto != RTPROT_KERNEL:
                net = ipaddress.ip_network(dst)
                try:
                    ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=index,
                              table=MAIN_TABLE, family=AF_INET if net.version == 4 else AF_INET6)
                    repairs.append(f"removed stale route {dst} dev {iface}")
                except Exception as exc:  # noqa: BLE001
                    log.debug("removing %s failed: %s", dst, exc)
                routes.pop(dst, None)
        if want is not None and want.mac:
            repairs += self._neighbours(ipr, iface, index, want)
        return repairs

    def _neighbours(self, ipr: Any, iface: str, index: int, want: _Want) -> list[str]:
        have = {}
        for n in ipr.get_neighbours(family=AF_INET, ifindex=index):
            have[n.get_attr("NDA_DST")] = (n.get_attr("NDA_LLADDR"), n["state"])
        repairs = []
        for ip in want.ipv4:
            current = have.get(ip)
            if current and current[0] == want.mac and current[1] & NUD_PERMANENT:
                continue
            ipr.neigh("replace", dst=ip, lladdr=want.mac, ifindex=index, state=NUD_PERMANENT,
                      family=AF_INET)
            repairs.append(f"neighbour {ip} lladdr {want.mac} dev {iface}")
        return repairs

    @staticmethod
    def _sysctls(settings: Iterable[tuple[str, str]]) -> list[str]:
        repairs = []
        for path, value in settings:
            current = read_sysctl(path)
            if current is None or current == value:
                continue
            try:
                write_sysctl(path, value)
                repairs.append(f"sysctl {path.replace('/', '.')}={value} (was {current})")
            except OSError as exc:
                log.warning("cannot set %s: %s", path, exc)
        return repairs
