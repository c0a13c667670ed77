"""Scenario: kill -9 Felix, Typha, BIRD and confd in turn while pods come and go.

Two simulated nodes run confd + BIRD; node 2 runs Typha and node 1 runs Felix
with TyphaAddr pointing at it. Pod A keeps an
established TCP connection to pod B (both on node 1) and sends through it
every 0.2 s for the whole run. In turn:

* Felix is SIGKILLed; while it is down a pod is added and one removed; the
  test restarts it (as a supervisor would) and waits until it has applied
  the latest revision.
* Typha is SIGKILLed; a change is made while it is down; the test restarts it
  and Felix reconnects and applies the change.
* BIRD is SIGKILLed; confd (its supervisor) restarts it; node 1 re-learns
  node 2's block route.
* confd is SIGKILLed (BIRD keeps running); a block is claimed for node 1 while
  it is down (so node 2 cannot learn it); the test restarts confd and node 2
  learns that block's route from node 1.

Checked: every pod operation gave a result or error JSON, the established
connection never failed, each component came back and converged, and after GC
nothing leaked.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid

from tests.chaos.etcd_kill import Attempt, _gc_and_check, classify
from tests.chaos.felix_node import NodeFelix, NodeTypha, allow_all_profile
from tests.chaos.slow_datastore import allow_all_profile_update
from tests.chaos.report import ChaosReport
from tests.support.nodes import Cluster, NetnsProcess, connect_in_netns, ip, netns_exec, wait_for

POOL = "10.68.0.0/16"
ECHO = ("import socket, threading\n"
        "s = socket.create_server(('0.0.0.0', 7007))\n"
        "def echo(c):\n"
        "    while (d := c.recv(4096)):\n"
        "        c.sendall(d)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    threading.Thread(target=echo, args=(c,), daemon=True).start()\n")


class Flow:
    """An established pod-to-pod TCP connection, exercised in the background."""

    def __init__(self, src_netns_path: str, dst: str) -> None:
        self.sock = connect_in_netns(src_netns_path, (dst, 7007))
        self.sock.settimeout(3)
        self.sent = self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sent += 1
            payload = f"ping {self.sent}\n".encode()
            try:
                self.sock.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    got += chunk
                self.ok += 1
            except (OSError, ConnectionError) as exc:
                self.failures.append(f"{time.strftime('%X')}: {exc!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _attempt(node, name: str) -> Attempt:  # type: ignore[no-untyped-def]
    cid = uuid.uuid4().hex
    a = Attempt(node, name, f"{node.netns}-{name}", cid,
                f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}")
    ip("netns", "add", a.netns)
    return a


def _add(a: Attempt) -> Attempt:
    res = a.node.cni("ADD", a.node.netconf(), a.cid, a.netns_path, cni_args=a.args)
    a.rc, a.stdout, a.finished = res.returncode, res.stdout, time.monotonic()
    return a


def run() -> ChaosReport:
    report = ChaosReport("kill -9 Felix, Typha, BIRD, confd in turn while pods come and go")
    converge: dict[str, float] = {}
    with Cluster() as cluster:
        cluster.create_pool(POOL)
        allow_all_profile(cluster)
        n1, n2 = cluster.add_node("kc-1"), cluster.add_node("kc-2")
        n1.start_confd()
        n2.start_confd()
        typha = NodeTypha(n2).start()
        felix = NodeFelix(n1, {"FELIX_TYPHAADDR": typha.addr}).start()
        attempts: list[Attempt] = []
        deleted: set[str] = set()
        echo: NetnsProcess | None = None
        flow: Flow | None = None
        try:
            a, b, gone = (_add(_attempt(n1, name)) for name in ("pod-a", "pod-b", "pod-gone"))
            attempts += [a, b, gone]
            c = _add(_attempt(n2, "pod-c"))
            attempts.append(c)
            for x in attempts:
                classify(x, report)
            assert all(x.address for x in attempts), report.table()
            felix.wait(allow_all_profile_update(cluster, uuid.uuid4().hex[:8]), timeout=120)
            echo = NetnsProcess(b.netns, ["python3", "-c", ECHO], os.path.join(n1.workdir, "echo.log"))
            wait_for(lambda: _can_connect(a.netns_path, b.address), 15, what="echo server in pod-b")
            flow = Flow(a.netns_path, b.address or "")
            n1_block = _block_of(cluster, c.address or "")
            n1.wait_route(n1_block, via=n2.ip, timeout=60)

            # Felix.
            felix.kill9()
            down = time.monotonic()
            d = _add(_attempt(n1, "pod-while-felix-down"))
            attempts.append(d)
            classify(d, report)
            res = n1.cni("DEL", n1.netconf(), gone.cid, gone.netns_path, cni_args=gone.args)
            report.attempted += 1
            if res.ok:
                report.succeeded += 1
                deleted.add(gone.cid)
            else:
                report.failed_cleanly += 1
            time.sleep(max(0.0, 3 - (time.monotonic() - down)))
            felix.start()
            t0 = time.monotonic()
            felix.wait(allow_all_profile_update(cluster, uuid.uuid4().hex[:8]), timeout=120)
            converge["Felix"] = time.monotonic() - t0
            # The pod added while Felix was down is programmed now: pod-a reaches it.
            report.attempted += 1
            if d.address and wait_for(lambda: netns_exec(a.netns, "ping", "-c1", "-W1", d.address or "")
                                      .returncode == 0, 30, what="pod-a -> pod added while Felix was down"):
                report.succeeded += 1

            # Typha (Felix's only view of the datastore; the test is Typha's supervisor).
            typha.kill9()
            marker = allow_all_profile_update(cluster, "while-typha-down")
            time.sleep(2)
            t0 = time.monotonic()
            typha.start()
            felix.wait(marker, timeout=120)
            converge["Typha"] = time.monotonic() - t0
            connects = felix.log().count(f"connected to Typha {typha.addr}")
            report.notes.append(f"Felix sessions with Typha: {connects}")
            if connects < 2:
                report.failed_badly += 1

            # BIRD (confd restarts it).
            old = n1.bird_pid()
            assert old is not None
            os.kill(old, signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(lambda: n1.bird_pid() not in (None, old), 30, what="BIRD restarted by confd")
            n1.wait_established({n2.ip}, timeout=60)
            n1.wait_route(n1_block, via=n2.ip, timeout=60)
            converge["BIRD"] = time.monotonic() - t0

            # confd (the test is its supervisor).
            assert n1.confd is not None
            os.kill(n1.confd.pid, signal.SIGKILL)
            n1.confd.proc.wait(10)
            new_block = "10.68.250.0/26"
            cluster.claim_block(n1.name, new_block)  # only node 1's confd can announce it
            time.sleep(2)
            if new_block in n2.routes():
                report.notes.append(f"{new_block} reached node 2 with node 1's confd dead?")
                report.failed_badly += 1
            t0 = time.monotonic()
            n1.start_confd()
            n2.wait_route(new_block, via=n1.ip, timeout=60)
            converge["confd"] = time.monotonic() - t0
            time.sleep(1)  # the flow gets a few more round trips after the last restart
        except BaseException:
            for x in attempts:  # the cluster removes node netns, not the pods' own
                ip("netns", "del", x.netns, check=False)
            raise
        finally:
            if flow is not None:
                flow.stop()
            if echo is not None:
                echo.stop()
            felix.stop()
            typha.stop()
        report.attempted += flow.sent if flow else 0
        report.succeeded += flow.ok if flow else 0
        report.failed_badly += len(flow.failures) if flow else 0
        report.notes.append(f"established pod-a -> pod-b flow: {flow.ok if flow else 0}/{flow.sent if flow else 0} "
                            f"round trips ok{(': ' + '; '.join(flow.failures[:3])) if flow and flow.failures else ''}")
        report.notes.append("restart to converged: " + ", ".join(f"{k} {v:.1f} s" for k, v in converge.items()))
        report.converge_s = max(converge.values()) if converge else 0.0
        live = [x for x in attempts if x.cid not in deleted]
        for x in attempts:
            if x.cid in deleted:
                x.address = None
        try:
            _gc_and_check(cluster, [n1, n2], live, report)
        finally:
            for x in attempts:
                if x.address is not None:
                    x.node.cni("DEL", x.node.netconf(), x.cid, x.netns_path, cni_args=x.args)
                ip("netns", "del", x.netns, check=False)
    return report


def _can_connect(netns_path: str, address: str | None) -> bool:
    try:
        connect_in_netns(netns_path, (address or "", 7007), timeout=1).close()
        return True
    except OSError:
        return False


def _block_of(cluster, address: str) -> str:  # type: ignore[no-untyped-def]
    import ipaddress

    from datastore.keys import ListOptions

    for kv in cluster.backend.list(ListOptions(kind="Block")).items:
        if ipaddress.ip_address(address) in ipaddress.ip_network(kv.value["cidr"]):
            return str(kv.value["cidr"])
    raise AssertionError(f"no block holds {address}")
