"""``calicoctl node status`` against a real BIRD 2 with BGP sessions to peers
that do not exist (so they sit in Active/Connect), plus the parser and table
on BIRD's raw reply."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any, Iterator

import pytest

from calicoctl.nodestatus import PeerRow, felix_running, parse_show_protocols, peer_table, process_argvs
from tests.calicoctl.conftest import CALICOCTL, base_env
from tests.support.etcd_server import free_port

BIRD = shutil.which("bird") or "/usr/sbin/bird"

# A BIRD 2.0.12 "show protocols" reply, as the control socket sends it (code, text).
REPLY = [
    (2002, "Name       Proto      Table      State  Since         Info"),
    (1002, "device1    Device     ---        up     18:27:43.779  "),
    (1002, "Mesh_192_0_2_12 BGP        ---        up     18:27:44.101  Established   "),
    (1002, "Global_192_0_2_1 BGP        ---        start  18:27:43.779  Active        Socket: Connection refused"),
    (1002, "Node_2001_db8__7 BGP        ---        start  2026-11-24 09:10:11  Connect       "),
    (1002, "kernel1    Kernel     master4    up     18:27:43.779  "),
]


def test_parse_and_table() -> None:
    v4 = parse_show_protocols(REPLY, 4)
    assert v4 == [
        PeerRow("192.0.2.12", "node-to-node mesh", "up", "18:27:44.101", "Established"),
        PeerRow("192.0.2.1", "global", "start", "18:27:43.779", "Active Socket: Connection refused"),
    ]
    v6 = parse_show_protocols(REPLY, 6)
    assert v6 == [PeerRow("2001:db8::7", "node specific", "start", "2026-11-24 09:10:11", "Connect")]
    assert peer_table(v4) == (
        "+--------------+-------------------+-------+--------------+-----------------------------------+\n"
        "| PEER ADDRESS |     PEER TYPE     | STATE |    SINCE     |               INFO                |\n"
        "+--------------+-------------------+-------+--------------+-----------------------------------+\n"
        "| 192.0.2.12   | node-to-node mesh | up    | 18:27:44.101 | Established                       |\n"
        "| 192.0.2.1    | global            | start | 18:27:43.779 | Active Socket: Connection refused |\n"
        "+--------------+-------------------+-------+--------------+-----------------------------------+\n"
    )


def test_process_detection() -> None:
    assert felix_running([["/usr/bin/python3", "/opt/venv/bin/calico-felix"]])
    assert felix_running([["calico-node", "-felix"]])
    assert not felix_running([["calico-node", "-confd"], ["bash"]])


@pytest.fixture
def bird(tmp_path: Any) -> Iterator[str]:
    if not os.path.exists(BIRD):
        pytest.skip("BIRD is not installed")
    port = free_port()
    cfg = tmp_path / "bird.cfg"
    cfg.write_text(f"""router id 127.0.0.1;
protocol device {{}}
protocol bgp Mesh_127_0_0_2 {{
  local 127.0.0.1 port {port} as 64512;
  neighbor 127.0.0.2 port {port} as 64512;
  ipv4 {{ import all; export none; }};
}}
protocol bgp Global_127_0_0_3 {{
  local 127.0.0.1 port {port} as 64512;
  neighbor 127.0.0.3 port {port} as 64513;
  multihop;
  ipv4 {{ import none; export none; }};
}}
protocol bgp Node_fd00__5 {{
  local as 64512;
  neighbor fd00::5 port {port} as 64514;
  ipv6 {{ import none; export none; }};
}}
""")
    sock = str(tmp_path / "bird.ctl")
    proc = subprocess.Popen([BIRD, "-f", "-s", sock, "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "BIRD did not create its control socket"
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _felix_elsewhere() -> bool:
    return felix_running(list(process_argvs()))


def test_node_status_with_real_bird(bird: str) -> None:
    env = {**base_env(), "CALICO_BIRD_SOCKET": bird}
    if not _felix_elsewhere():
        absent = subprocess.run([CALICOCTL, "node", "status"], capture_output=True, text=True, env=env)
        assert (absent.returncode, absent.stdout, absent.stderr) == (1, "", "Calico process is not running.\n")
    # A process that looks like Felix (argv[0] calico-felix), as the check looks for.
    felix = subprocess.Popen(["calico-felix", "120"], executable="/bin/sleep")
    try:
        time.sleep(0.5)  # let BIRD try its peers
        result = subprocess.run([CALICOCTL, "node", "status"], capture_output=True, text=True, env=env)
    finally:
        felix.kill()
        felix.wait()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Calico process is running.\n\nIPv4 BGP status\n+--------------+"), out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    assert rows[0] == ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]
    peers = {r[0]: r for r in rows if r[0] != "PEER ADDRESS"}
    assert set(peers) == {"127.0.0.2", "127.0.0.3", "fd00::5"}, out
    assert peers["127.0.0.2"][1] == "node-to-node mesh" and peers["127.0.0.3"][1] == "global"
    assert peers["fd00::5"][1] == "node specific"
    for row in peers.values():
        assert row[2] in ("start", "down", "up"), row
        assert row[4].split()[0] in ("Idle", "Connect", "Active", "OpenSent", "Error:"), row
    assert "\nIPv6 BGP status\n" in out
    assert out.index("127.0.0.3") < out.index("IPv6 BGP status") < out.index("fd00::5")
