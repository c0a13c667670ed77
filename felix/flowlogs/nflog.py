"""A minimal NFLOG reader (netlink, ``NETLINK_NETFILTER``, subsystem ULOG).

Binds one log group (nftables ``log group N``), asks for the first bytes of
each packet, and yields :class:`Packet` records: the rule's prefix and the IP
addresses, protocol and ports of the packet. No library: the protocol is a
few fixed structures (linux/netfilter/nfnetlink_log.h).
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass
from typing import Iterator, Optional

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 4, 5
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND, NFULNL_CFG_CMD_PF_BIND = 1, 2, 3
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
COPY_RANGE = 64  # IP header + the ports
PORT_PROTOCOLS = {6, 17, 132, 136}


@dataclass(frozen=True)
class Packet:
    prefix: str
    src: str
    dst: str
    protocol: int
    sport: Optional[int]
    dport: Optional[int]
    icmp_type: Optional[int]
    time: float


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * ((4 - length % 4) % 4)


def parse_ip(payload: bytes) -> Optional[tuple[str, str, int, Optional[int], Optional[int], Optional[int]]]:
    """(src, dst, protocol, sport, dport, icmp type) of an IPv4/IPv6 packet's start."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = str(ipaddress.IPv4Address(payload[12:16])), str(ipaddress.IPv4Address(payload[16:20]))
        l4 = payload[ihl:]
    elif version == 6 and len(payload) >= 40:
        proto = payload[6]
        src, dst = str(ipaddress.IPv6Address(payload[8:24])), str(ipaddress.IPv6Address(payload[24:40]))
        l4 = payload[40:]
    else:
        return None
    if proto in PORT_PROTOCOLS and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        return src, dst, proto, sport, dport, None
    if proto in (1, 58) and l4:
        return src, dst, proto, None, None, l4[0]
    return src, dst, proto, None, None, None


class NflogReader:
    def __init__(self, group: int, rcvbuf: int = 4 << 20) -> None:
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            pass
        self.sock.bind((0, 0))
        self._seq = 0
        for family in (socket.AF_INET, socket.AF_INET6):
            self._config(family, 0, _attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_PF_BIND) + b"\0"),
                         check=False)
        self._config(0, group, _attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND) + b"\0"))
        self._config(0, group, _attr(NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0))
                     + _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
                     + _attr(NFULA_CFG_TIMEOUT, struct.pack("!I", 1)))

    def _config(self, family: int, res_id: int, attrs: bytes, check: bool = True) -> None:
        self._seq += 1
        body = struct.pack("!BBH", family, 0, res_id) + attrs
        msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        header = struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            for mtype, payload in _messages(data):
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack("=i", payload[:4])
                    if err and check:
                        raise OSError(-err, f"NFLOG config of group {res_id}: {err}")
                    return

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, timeout: Optional[float] = None) -> Iterator[Packet]:
        """Packets from one receive (blocks up to ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        except OSError as exc:  # ENOBUFS: the kernel dropped messages; keep going
            if exc.errno == 105:
                return
            raise
        now = time.time()
        for mtype, payload in _messages(data):
            if mtype != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                continue
            prefix, ip = "", b""
            pos = 4  # nfgenmsg
            while pos + 4 <= len(payload):
                length, kind = struct.unpack("=HH", payload[pos:pos + 4])
                if length < 4:
                    break
                value = payload[pos + 4:pos + length]
                kind &= 0x7FFF
                if kind == NFULA_PREFIX:
                    prefix = value.split(b"\0", 1)[0].decode(errors="replace")
                elif kind == NFULA_PAYLOAD:
                    ip = value
                pos += (length + 3) & ~3
            parsed = parse_ip(ip)
            if parsed is not None:
                yield Packet(prefix, *parsed, time=now)

    def close(self) -> None:
        try:
            self._config(0, self.group, _attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_UNBIND) + b"\0"),
                         check=False)
        except OSError:
            pass
        self.sock.close()


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 16 <= len(data):
        length, mtype, _flags, _seq, _pid = struct.unpack("=IHHII", data[pos:pos + 16])
        if length < 16:
            break
        yield mtype, data[pos + 16:pos + length]
        pos += (length + 3) & ~3
