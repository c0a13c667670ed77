"""A small rtnetlink client: exactly what the CNI data plane needs.

Stdlib only (``socket`` + ``struct``), so the ADD path never imports
pyroute2 (~150 ms in a frozen executable). One :class:`Netlink` is one
NETLINK_ROUTE socket in the network namespace of the thread that opened it;
every request asks for an ACK and waits for it, so a failure surfaces as a
:class:`NetlinkError` at the call that caused it, naming the object.

Covered: links (veth with its peer created in another netns, MAC, MTU,
up/down, rename, delete, get by name/index), addresses (add, list) and routes
(add, get, list the main table).
"""
from __future__ import annotations

import errno as _errno
import os
import socket
import struct
from typing import NamedTuple

# -- constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, ...) ---------

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR's flags: extended ACK attributes follow
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
NLA_F_NESTED = 0x8000
IFF_UP = 0x1

IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4

AF_UNSPEC, AF_INET, AF_INET6 = 0, socket.AF_INET, socket.AF_INET6

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")  # len, type
_ERRHDR = struct.Struct("=i")


class NetlinkError(OSError):
    """A request the kernel refused: ``errno`` is the kernel's error,
    ``str()`` names what was being done to which object."""

    def __init__(self, code: int, what: str, detail: str = "") -> None:
        message = f"{what}: {os.strerror(code)}"
        if detail:
            message += f" ({detail})"
        super().__init__(code, message)
        self.code = code  # pyroute2's NetlinkError has .code; callers may use either
        self.what = what

    def __str__(self) -> str:
        return str(self.strerror)


class Link(NamedTuple):
    index: int
    name: str
    mac: str
    mtu: int
    flags: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


class Address(NamedTuple):
    family: int
    address: str
    prefixlen: int
    index: int

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


class Route(NamedTuple):
    family: int
    dst: str | None  # None: default route
    dst_len: int
    gateway: str | None
    oif: int | None
    scope: int
    table: int
    flags: int


# -- encoding -----------------------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def family_of(address: str) -> int:
    return AF_INET6 if ":" in address else AF_INET


def ip_bytes(address: str) -> bytes:
    return socket.inet_pton(family_of(address), address)


def ip_str(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0, family: int = AF_UNSPEC) -> bytes:
    return _IFINFOMSG.pack(family, 0, index, flags, change)


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """rtattrs from ``offset`` to the end, by type (the nested flag masked off;
    a repeated type keeps its first value)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out.setdefault(kind & 0x3FFF, data[offset + _RTATTR.size: offset + length])
        offset += (length + 3) & ~3
    return out


def parse_messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of every netlink message in one datagram."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        out.append((kind, flags, seq, data[offset + _NLMSGHDR.size: offset + length]))
        offset += (length + 3) & ~3
    return out


def parse_error(flags: int, body: bytes) -> tuple[int, str]:
    """(errno, extended ACK message) of an NLMSG_ERROR body; errno 0 is an ACK."""
    (error,) = _ERRHDR.unpack_from(body, 0)
    detail = ""
    if error and flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the request is not echoed: its header only.
        attrs = parse_attrs(body, _ERRHDR.size + _NLMSGHDR.size)
        if NLMSGERR_ATTR_MSG in attrs:
            detail = attrs[NLMSGERR_ATTR_MSG].rstrip(b"\0").decode(errors="replace")
    return -error, detail


def parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body, 0)
    attrs = parse_attrs(body, _IFINFOMSG.size)
    name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
    mac = mac_str(attrs[IFLA_ADDRESS]) if IFLA_ADDRESS in attrs else ""
    mtu = struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
    return Link(index, name, mac, mtu, flags)


def parse_address(body: bytes) -> Address:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body, 0)
    attrs = parse_attrs(body, _IFADDRMSG.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS) or b""
    return Address(family, ip_str(family, raw) if raw else "", prefixlen, index)


def parse_route(body: bytes) -> Route:
    family, dst_len, _src_len, _tos, table, _proto, scope, _type, flags = _RTMSG.unpack_from(body, 0)
    attrs = parse_attrs(body, _RTMSG.size)
    if RTA_TABLE in attrs:
        table = struct.unpack("=I", attrs[RTA_TABLE])[0]
    dst = ip_str(family, attrs[RTA_DST]) if RTA_DST in attrs else None
    gateway = ip_str(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
    oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else None
    return Route(family, dst, dst_len, gateway, oif, scope, table, flags)


def veth_request(name: str, peer: str, *, peer_netns_fd: int | None = None, mac: str | None = None,
                 mtu: int | None = None, peer_mtu: int | None = None) -> bytes:
    """RTM_NEWLINK body for a veth pair ``name`` <-> ``peer`` (the peer made
    straight in the netns of ``peer_netns_fd``)."""
    peer_attrs = attr_str(IFLA_IFNAME, peer)
    if peer_mtu:
        peer_attrs += attr_u32(IFLA_MTU, peer_mtu)
    if peer_netns_fd is not None:
        peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    info_data = attr(VETH_INFO_PEER | NLA_F_NESTED, ifinfomsg() + peer_attrs)
    linkinfo = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA | NLA_F_NESTED, info_data)
    body = ifinfomsg() + attr_str(IFLA_IFNAME, name)
    if mac:
        body += attr(IFLA_ADDRESS, mac_bytes(mac))
    if mtu:
        body += attr_u32(IFLA_MTU, mtu)
    return body + attr(IFLA_LINKINFO | NLA_F_NESTED, linkinfo)


def set_link_request(index: int, *, mac: str | None = None, mtu: int | None = None,
                     up: bool | None = None, name: str | None = None) -> bytes:
    flags = change = 0
    if up is not None:
        change = IFF_UP
        flags = IFF_UP if up else 0
    body = ifinfomsg(index, flags, change)
    if name:
        body += attr_str(IFLA_IFNAME, name)
    if mac:
        body += attr(IFLA_ADDRESS, mac_bytes(mac))
    if mtu:
        body += attr_u32(IFLA_MTU, mtu)
    return body


def address_request(index: int, address: str, prefixlen: int) -> bytes:
    family = family_of(address)
    raw = ip_bytes(address)
    flags = IFA_F_NODAD if family == AF_INET6 else 0
    return (_IFADDRMSG.pack(family, prefixlen, flags, RT_SCOPE_UNIVERSE, index)
            + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))


def route_request(dst: str, dst_len: int, *, oif: int | None = None, gateway: str | None = None,
                  scope: int = RT_SCOPE_UNIVERSE, onlink: bool = False, table: int = RT_TABLE_MAIN) -> bytes:
    family = family_of(dst)
    body = _RTMSG.pack(family, dst_len, 0, 0, table if table < 256 else 0, RTPROT_BOOT, scope, RTN_UNICAST,
                       RTNH_F_ONLINK if onlink else 0)
    if dst_len:
        body += attr(RTA_DST, ip_bytes(dst))
    if table >= 256:
        body += attr_u32(RTA_TABLE, table)
    if gateway:
        body += attr(RTA_GATEWAY, ip_bytes(gateway))
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    return body


# -- the socket -----------------------------------------------------------------------


class Netlink:
    """An rtnetlink socket in the calling thread's network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:
                    pass  # older kernels: plain errors, echoed requests
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, body) of the replies up to its
        ACK or end of dump. Raises NetlinkError(errno, what) on refusal."""
        self.seq += 1
        seq = self.seq
        dump = (flags & NLM_F_DUMP) == NLM_F_DUMP
        self.sock.send(message(kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, body))
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            for rkind, rflags, rseq, rbody in parse_messages(data):
                if rseq != seq:
                    continue  # a late reply to an earlier request
                if rkind == NLMSG_ERROR:
                    code, detail = parse_error(rflags, rbody)
                    if code:
                        raise NetlinkError(code, what, detail)
                    return replies
                if rkind == NLMSG_DONE:
                    if dump:
                        return replies
                    continue
                replies.append((rkind, rbody))  # a get's answer: its ACK follows

    # -- links

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None."""
        try:
            replies = self.request(RTM_GETLINK, 0, ifinfomsg() + attr_str(IFLA_IFNAME, name), f"get link {name}")
        except NetlinkError as exc:
            if exc.code == _errno.ENODEV:
                return None
            raise
        return next((parse_link(b) for k, b in replies if k == RTM_NEWLINK), None)

    def link_by_index(self, index: int) -> Link | None:
        try:
            replies = self.request(RTM_GETLINK, 0, ifinfomsg(index), f"get link {index}")
        except NetlinkError as exc:
            if exc.code == _errno.ENODEV:
                return None
            raise
        return next((parse_link(b) for k, b in replies if k == RTM_NEWLINK), None)

    def add_veth(self, name: str, peer: str, *, peer_netns_fd: int | None = None, mac: str | None = None,
                 mtu: int | None = None, peer_mtu: int | None = None) -> None:
        where = " in another netns" if peer_netns_fd is not None else ""
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     veth_request(name, peer, peer_netns_fd=peer_netns_fd, mac=mac, mtu=mtu, peer_mtu=peer_mtu),
                     f"create veth {name} with peer {peer}{where}")

    def set_link(self, index: int, *, mac: str | None = None, mtu: int | None = None, up: bool | None = None,
                 name: str | None = None, label: str = "") -> None:
        self.request(RTM_NEWLINK, 0, set_link_request(index, mac=mac, mtu=mtu, up=up, name=name),
                     f"set link {label or index}")

    def del_link(self, index: int, label: str = "") -> None:
        self.request(RTM_DELLINK, 0, ifinfomsg(index), f"delete link {label or index}")

    # -- addresses

    def add_address(self, index: int, address: str, prefixlen: int, label: str = "") -> None:
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, address_request(index, address, prefixlen),
                     f"add address {address}/{prefixlen} to {label or index}")

    def addresses(self, index: int | None = None, family: int = AF_UNSPEC) -> list[Address]:
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        out = [parse_address(b) for k, b in self.request(RTM_GETADDR, NLM_F_DUMP, body, "list addresses")
               if k == RTM_NEWADDR]
        return [a for a in out if index is None or a.index == index]

    # -- routes

    def add_route(self, dst: str, dst_len: int, *, oif: int | None = None, gateway: str | None = None,
                  scope: int = RT_SCOPE_UNIVERSE, onlink: bool = False, label: str = "") -> None:
        via = f" via {gateway}" if gateway else ""
        dev = f" dev {label or oif}" if oif is not None else ""
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
                     route_request(dst, dst_len, oif=oif, gateway=gateway, scope=scope, onlink=onlink),
                     f"add route {dst}/{dst_len}{via}{dev}")

    def get_route(self, dst: str) -> Route | None:
        """The route the kernel would use for ``dst`` (``ip route get``)."""
        family = family_of(dst)
        bits = 128 if family == AF_INET6 else 32
        body = _RTMSG.pack(family, bits, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, ip_bytes(dst))
        try:
            replies = self.request(RTM_GETROUTE, 0, body, f"get route {dst}")
        except NetlinkError as exc:
            if exc.code in (_errno.ENETUNREACH, _errno.EHOSTUNREACH):
                return None
            raise
        return next((parse_route(b) for k, b in replies if k == RTM_NEWROUTE), None)

    def routes(self, family: int, table: int = RT_TABLE_MAIN) -> list[Route]:
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        out = [parse_route(b) for k, b in self.request(RTM_GETROUTE, NLM_F_DUMP, body, "list routes")
               if k == RTM_NEWROUTE]
        return [r for r in out if r.table == table]
