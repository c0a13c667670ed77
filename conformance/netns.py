"""Network namespaces the suite creates, inspects and removes (through iproute2's `ip -j`)."""
from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetnsError(Exception):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def unique_name(prefix: str = "cnf") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class RouteEntry:
    dst: IPNet
    gateways: frozenset[IPAddr]
    table: str
    dev: str | None


@dataclass
class Netns:
    """A named namespace under /run/netns. `path` is what goes into CNI_NETNS."""

    name: str
    _deleted: bool = field(default=False, repr=False)

    @classmethod
    def create(cls, name: str | None = None) -> "Netns":
        ns = cls(name or unique_name())
        _ip("netns", "add", ns.name)
        return ns

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    def exists(self) -> bool:
        return Path(self.path).exists()

    def delete(self) -> None:
        if self.exists():
            _ip("netns", "del", self.name, check=False)
        self._deleted = True

    def recreate(self) -> None:
        """A fresh namespace under the same name (so the same CNI_NETNS path)."""
        self.delete()
        _ip("netns", "add", self.name)
        self._deleted = False

    # -- inspection --------------------------------------------------------------------------
    def _json(self, *args: str) -> list[dict[str, Any]]:
        proc = _ip("-n", self.name, "-j", *args, check=False)
        if proc.returncode != 0:
            return []
        text = proc.stdout.strip()
        return json.loads(text) if text else []

    def link(self, ifname: str) -> dict[str, Any] | None:
        links = self._json("link", "show", "dev", ifname)
        return links[0] if links else None

    def link_names(self) -> list[str]:
        return [str(link["ifname"]) for link in self._json("link", "show")]

    def addresses(self, ifname: str) -> list[IPIface]:
        out: list[IPIface] = []
        for link in self._json("addr", "show", "dev", ifname):
            for info in link.get("addr_info", []):
                if info.get("family") in ("inet", "inet6"):
                    out.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
        return out

    def routes(self) -> list[RouteEntry]:
        out: list[RouteEntry] = []
        for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            for r in self._json(family, "route", "show", "table", "all"):
                if r.get("type", "unicast") not in ("unicast",):
                    continue
                dst = r.get("dst", "default")
                dst = default if dst == "default" else dst
                gws = set()
                if "gateway" in r:
                    gws.add(ipaddress.ip_address(r["gateway"]))
                for hop in r.get("nexthops", []) or []:
                    if "gateway" in hop:
                        gws.add(ipaddress.ip_address(hop["gateway"]))
                out.append(
                    RouteEntry(
                        dst=ipaddress.ip_network(dst, strict=False),
                        gateways=frozenset(gws),
                        table=str(r.get("table", "main")),
                        dev=r.get("dev"),
                    )
                )
        return out

    def del_address(self, ifname: str, address: IPIface) -> None:
        _ip("-n", self.name, "addr", "del", str(address), "dev", ifname)


def delete_host_link(ifname: str) -> None:
    """Best-effort removal of a host interface (e.g. a test bridge)."""
    _ip("link", "del", ifname, check=False)


def host_link_exists(ifname: str) -> bool:
    return _ip("link", "show", "dev", ifname, check=False).returncode == 0
