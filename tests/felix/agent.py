"""Probe agent that runs inside a pod's network namespace (stdlib only).

Started as ``ip netns exec <ns> python3 agent.py <port> <port> ...``, it
serves TCP and UDP echo on the given ports and answers JSON commands, one
per line on stdin, with one JSON line on stdout:

  {"cmd": "probe", "timeout": 0.5,
   "targets": [["10.0.0.2", "tcp", 80], ["10.0.0.3", "udp", 81], ["10.0.0.4", "icmp", 0]]}
      -> {"results": [true, false, ...], "errors": ["", "timeout", ...]}
  {"cmd": "open", "id": "c1", "target": ["10.0.0.2", 80], "timeout": 1}  -> {"ok": true}
  {"cmd": "send", "id": "c1", "timeout": 1}                              -> {"ok": true|false}
  {"cmd": "close", "id": "c1"}                                           -> {"ok": true}
  {"cmd": "who", "target": ["10.0.0.2", 80]}        -> {"seen_as": "<source address the server saw>"}
  {"cmd": "udpflood", "target": ["10.0.0.2", 9000], "interval": 0.001, "duration": 5} -> {"ok": true}
  {"cmd": "first_udp", "port": 9000, "after": <monotonic>, "timeout": 5}
      -> {"t": <monotonic of the first datagram received after 'after'> | null}

A probe succeeds when data sent comes back (TCP: connect + echo; UDP: a
datagram echoed; ICMP: an echo reply).
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

conns: dict[str, socket.socket] = {}
udp_arrivals: dict[int, list[float]] = {}
udp_lock = threading.Lock()


def tcp_server(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(256)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=tcp_echo, args=(conn,), daemon=True).start()


def tcp_echo(conn: socket.socket) -> None:
    try:
        while True:
            data = conn.recv(4096)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def udp_server(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", port))
    while True:
        data, addr = srv.recvfrom(2048)
        if data == b"who":
            try:
                srv.sendto(addr[0].encode(), addr)
            except OSError:
                pass
            continue
        if data.startswith(b"flood"):
            with udp_lock:
                udp_arrivals.setdefault(port, []).append(time.monotonic())
            continue
        try:
            srv.sendto(data, addr)
        except OSError:
            pass


def probe_tcp(ip: str, port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            s.sendall(b"ping\n")
            return "" if s.recv(16) == b"ping\n" else "bad echo"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def probe_udp(ip: str, port: int, timeout: float) -> str:
    token = os.urandom(8).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(token, (ip, port))
            deadline = time.monotonic() + timeout
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data, _ = s.recvfrom(2048)
                if data == token:
                    return ""
        except socket.timeout:
            return "timeout"
        except OSError as exc:
            return f"error: {exc.strerror or exc}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def probe_icmp(ip: str, timeout: float) -> str:
    ident = int.from_bytes(os.urandom(2), "big")
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"felix-probe"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.sendto(packet, (ip, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                return "timeout"
            data, addr = s.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and addr[0] == ip:
                return ""


def probe(target: list, timeout: float) -> str:
    ip, proto, port = target
    if proto == "tcp":
        return probe_tcp(ip, port, timeout)
    if proto == "udp":
        return probe_udp(ip, port, timeout)
    return probe_icmp(ip, timeout)


def udp_flood(ip: str, port: int, interval: float, duration: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            try:
                s.sendto(b"flood", (ip, port))
            except OSError:
                pass
            time.sleep(interval)


def handle(cmd: dict) -> dict:
    op = cmd["cmd"]
    if op == "probe":
        timeout = float(cmd.get("timeout", 0.5))
        targets = cmd["targets"]
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            errors = list(pool.map(lambda t: probe(t, timeout), targets))
        return {"results": [e == "" for e in errors], "errors": errors}
    if op == "open":
        ip, port = cmd["target"]
        try:
            conns[cmd["id"]] = socket.create_connection((ip, port), timeout=float(cmd.get("timeout", 1)))
            return {"ok": True}
        except OSError as exc:
            return {"ok": False, "error": str(exc)}
    if op == "send":
        s = conns[cmd["id"]]
        s.settimeout(float(cmd.get("timeout", 1)))
        try:
            s.sendall(b"data\n")
            return {"ok": s.recv(16) == b"data\n"}
        except OSError as exc:
            return {"ok": False, "error": str(exc)}
    if op == "close":
        s = conns.pop(cmd["id"], None)
        if s is not None:
            s.close()
        return {"ok": True}
    if op == "who":
        ip, port = cmd["target"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(float(cmd.get("timeout", 1)))
            try:
                s.sendto(b"who", (ip, port))
                return {"seen_as": s.recvfrom(256)[0].decode()}
            except OSError as exc:
                return {"seen_as": None, "error": str(exc)}
    if op == "udpflood":
        ip, port = cmd["target"]
        threading.Thread(target=udp_flood, args=(ip, port, float(cmd["interval"]), float(cmd["duration"])),
                         daemon=True).start()
        return {"ok": True}
    if op == "first_udp":
        port, after = int(cmd["port"]), float(cmd["after"])
        deadline = time.monotonic() + float(cmd.get("timeout", 5))
        while time.monotonic() < deadline:
            with udp_lock:
                hits = [t for t in udp_arrivals.get(port, []) if t >= after]
            if hits:
                return {"t": hits[0]}
            time.sleep(0.0005)
        return {"t": None}
    if op == "last_udp":
        port = int(cmd["port"])
        with udp_lock:
            arrivals = udp_arrivals.get(port, [])
            return {"t": arrivals[-1] if arrivals else None}
    return {"error": f"unknown command {op}"}


def main() -> None:
    for port in (int(p) for p in sys.argv[1:]):
        threading.Thread(target=tcp_server, args=(port,), daemon=True).start()
        threading.Thread(target=udp_server, args=(port,), daemon=True).start()
    time.sleep(0.05)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as exc:  # noqa: BLE001
            reply = {"error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
