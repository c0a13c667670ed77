"""``calicoctl node status``: is Calico (Felix) running on this host, and the
state of BIRD's BGP sessions.

As upstream: needs root; Felix must be running (``Calico process is not
running.`` otherwise, exit 1); BIRD is asked ``show protocols`` on
``/var/run/calico/bird.ctl`` (falling back to ``/var/run/bird/bird.ctl``;
``CALICO_BIRD_SOCKET`` overrides, as for confd) and the sessions confd
configured (``Mesh_``, ``Global_``, ``Node_`` names) are tabulated.  BIRD 2
serves both address families on one socket, so both tables come from it;
with BIRD 1.x the IPv6 table comes from ``bird6.ctl``.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Callable, Iterable

from calicoctl import boxtable
from calicoctl.commands import CommandError

SOCKET_DIRS = ("/var/run/calico", "/var/run/bird")
HEADERS = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]


@dataclass(frozen=True)
class PeerRow:
    address: str
    peer_type: str
    state: str
    since: str
    info: str


def process_argvs() -> Iterable[list[str]]:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if raw:
            yield [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def _is(argv: list[str], name: str) -> bool:
    """argv[0] is ``name`` (or a Python console script named ``name``)."""
    if os.path.basename(argv[0]) == name:
        return True
    return len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and os.path.basename(argv[1]) == name


def felix_running(argvs: list[list[str]]) -> bool:
    return any(_is(a, "calico-felix") or (_is(a, "calico-node") and "-felix" in a[1:]) for a in argvs)


def bird_running(argvs: list[list[str]], name: str) -> bool:
    return any(_is(a, name) for a in argvs)


def parse_show_protocols(lines: list[tuple[int, str]], version: int) -> list[PeerRow]:
    """The BGP sessions of a ``show protocols`` reply, for one IP version."""
    from bird.status import parse_protocols, peer_from_protocol

    out = []
    for proto in parse_protocols(lines):
        peer = peer_from_protocol(proto)
        if peer is None:
            continue
        if (":" in peer.address) != (version == 6):
            continue
        address = f"{peer.address}:{peer.port}" if peer.port else peer.address
        out.append(PeerRow(address, peer.peer_type, peer.state, peer.since, peer.info))
    return out


def peer_table(rows: list[PeerRow]) -> str:
    return boxtable.render(HEADERS, [[r.address, r.peer_type, r.state, r.since, r.info] for r in rows])


def _socket(name: str) -> str | None:
    override = os.environ.get("CALICO_BIRD_SOCKET")
    if override:
        return os.path.join(os.path.dirname(override), name) if name != "bird.ctl" else override
    for d in SOCKET_DIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return os.path.join(SOCKET_DIRS[0], name)


def _query(path: str) -> tuple[str, list[tuple[int, str]]]:
    from bird.control import BirdControl, BirdError

    try:
        with BirdControl(path, timeout=2.0) as ctl:
            reply = ctl.command("show protocols")
            version = ctl.version
    except BirdError as e:
        raise ConnectionError(str(e)) from None
    if not reply.ok:
        raise CommandError(f"Error executing command: {reply.text}")
    return version, reply.lines


def _bird_major(greeting: str) -> int:
    # "BIRD 2.0.12 ready."
    parts = greeting.split()
    if len(parts) >= 2 and parts[1][:1].isdigit():
        return int(parts[1].split(".")[0])
    return 1


def status_text(argvs: list[list[str]]) -> str:
    out = ["Calico process is running.\n"]
    v4_running = bird_running(argvs, "bird")
    v6_running = bird_running(argvs, "bird6")
    if not (v4_running or v6_running):
        out.append("\nNone of the BGP backend processes (BIRD or GoBGP) are running.\n")
        return "".join(out) + "\n"
    bird2_lines: list[tuple[int, str]] | None = None
    for version, running, sock in ((4, v4_running, "bird.ctl"), (6, v6_running, "bird6.ctl")):
        if version == 6 and not running and bird2_lines is None:
            out.append("\nINFO: BIRDv6 process: 'bird6' is not running.\n")
            continue
        if version == 4 and not running:
            out.append("\nINFO: BIRDv4 process: 'bird' is not running.\n")
            continue
        out.append(f"\nIPv{version} BGP status\n")
        if version == 6 and not running and bird2_lines is not None:
            lines = bird2_lines  # BIRD 2: one daemon for both families
        else:
            path = _socket(sock)
            assert path is not None
            try:
                greeting, lines = _query(path)
            except ConnectionError as e:
                out.append(f"Error querying BIRD: unable to connect to BIRDv{version} socket: {e}\n")
                continue
            if version == 4 and _bird_major(greeting) >= 2:
                bird2_lines = lines
        rows = parse_show_protocols(lines, version)
        out.append(peer_table(rows) if rows else f"No IPv{version} peers found.\n")
    return "".join(out) + "\n"


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    if getattr(args, "node_command", "status") == "diags":
        from calicoctl import nodediags

        nodediags.run(args, out)
        return
    if os.geteuid() != 0:
        raise CommandError("This command must be run as root.")
    argvs = list(process_argvs())
    if not felix_running(argvs):
        raise CommandError("Calico process is not running.")
    out(status_text(argvs))
