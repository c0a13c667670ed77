"""BGP peer status from BIRD's control socket (``calicoctl node status``).

Sends ``show protocols`` and keeps the BGP sessions confd configured
(``Mesh_``, ``Global_``, ``Node_``, ``Local_Workload_`` names), recovering
the peer address from the name as upstream calicoctl does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bird.control import DEFAULT_SOCKET, BirdControl, BirdError

PEER_TYPES = {
    "Mesh": "node-to-node mesh",
    "Global": "global",
    "Node": "node specific",
    "Local_Workload": "local workload",
}
_NAME = re.compile(r"^(Mesh|Global|Node|Local_Workload)_(.+?)(?:_port_(\d+))?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?$")


@dataclass(frozen=True)
class Protocol:
    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str


@dataclass(frozen=True)
class Peer:
    address: str
    port: int | None
    peer_type: str
    state: str  # BIRD's protocol state: up, start, down, ...
    since: str
    info: str  # BGP state: Established, Active, Connect, ... plus any error
    protocol: str

    @property
    def established(self) -> bool:
        return self.info.split()[:1] == ["Established"]


def parse_protocols(lines: list[tuple[int, str]]) -> list[Protocol]:
    """Rows of a ``show protocols`` reply (code 1002 lines)."""
    rows = []
    for code, text in lines:
        if code != 1002:
            continue
        parts = text.split()
        if len(parts) < 4:
            continue
        name, proto, table, state = parts[:4]
        rest = parts[4:]
        since = ""
        if rest:
            since = rest.pop(0)
            if _DATE.match(since) and rest and _TIME.match(rest[0]):
                since += " " + rest.pop(0)
        rows.append(Protocol(name, proto, table, state, since, " ".join(rest)))
    return rows


def peer_from_protocol(p: Protocol) -> Peer | None:
    if p.proto != "BGP":
        return None
    m = _NAME.match(p.name)
    if not m:
        return None
    prefix, raw, port = m.groups()
    parts = raw.split("_")
    is_v4 = len(parts) == 4 and all(part.isdigit() for part in parts)
    address = ".".join(parts) if is_v4 else ":".join(parts)
    return Peer(
        address=address,
        port=int(port) if port else None,
        peer_type=PEER_TYPES[prefix],
        state=p.state,
        since=p.since,
        info=p.info,
        protocol=p.name,
    )


def peers(socket_path: str = DEFAULT_SOCKET, timeout: float = 5.0) -> list[Peer]:
    """The BGP peers BIRD runs, with their state. Raises BirdError if BIRD is unreachable."""
    with BirdControl(socket_path, timeout) as ctl:
        reply = ctl.command("show protocols")
    if not reply.ok:
        raise BirdError(f"BIRD refused 'show protocols': {reply.text}")
    return [peer for p in parse_protocols(reply.lines) if (peer := peer_from_protocol(p))]


def format_table(rows: list[Peer]) -> str:
    """calicoctl's layout: PEER ADDRESS | PEER TYPE | STATE | SINCE | INFO."""
    header = ("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO")
    body = [
        (f"{r.address}:{r.port}" if r.port else r.address, r.peer_type, r.state, r.since, r.info)
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [sep, "| " + " | ".join(h.center(w) for h, w in zip(header, widths)) + " |", sep]
    for row in body:
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    lines.append(sep)
    return "\n".join(lines)


def node_status(socket_path: str = DEFAULT_SOCKET) -> str:
    """The text ``calicoctl node status`` prints."""
    try:
        with BirdControl(socket_path) as ctl:
            version = ctl.version
            reply = ctl.command("show protocols")
    except BirdError as exc:
        return f"Calico process is not running.\n\nBIRD is not ready: {exc}"
    rows = [peer for p in parse_protocols(reply.lines) if (peer := peer_from_protocol(p))]
    out = ["Calico process is running.", "", "IPv4 BGP status"]
    v4 = [r for r in rows if ":" not in r.address]
    v6 = [r for r in rows if ":" in r.address]
    out.append(format_table(v4) if v4 else "No IPv4 peers found.")
    out += ["", "IPv6 BGP status", format_table(v6) if v6 else "No IPv6 peers found.", ""]
    out.append(f"({version.removesuffix(' ready.')})")
    return "\n".join(out)
