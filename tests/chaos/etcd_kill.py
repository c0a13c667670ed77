"""Scenario: kill -9 etcd while pods are being added concurrently on several nodes.

Simulated nodes (tests/support/nodes.Cluster: node netns on a bridge, etcd in
the fabric netns) each run the real ``calico`` + ``calico-ipam`` for their
pods. Part-way through the ADD storm etcd is SIGKILLed, left down, then started
again on the same data dir. Then, as a runtime would, each node runs CNI GC
with the attachments whose ADD succeeded. Checked: every ADD returned a result
or the spec's error JSON; no address is held twice; after GC no allocation,
endpoint or host veth exists without a successful ADD behind it; every
successful ADD's address is allocated to its own handle.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from datastore.keys import ListOptions
from tests.chaos.report import ChaosReport
from tests.ipam.helpers import allocations
from tests.support.nodes import Cluster, SimNode, ip, netns_exec

POOL = "10.66.0.0/16"
NETWORK = "k8s-pod-network"


@dataclass
class Attempt:
    node: SimNode
    name: str
    netns: str
    cid: str
    args: str
    rc: int = -1
    stdout: str = ""
    address: str | None = None
    code: int | None = None
    finished: float = 0.0

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


def classify(a: Attempt, report: ChaosReport) -> None:
    report.attempted += 1
    try:
        doc = json.loads(a.stdout)
    except ValueError:
        report.failed_badly += 1
        report.notes.append(f"{a.name}: stdout not JSON: {a.stdout[:200]!r}")
        return
    if a.rc == 0 and isinstance(doc, dict) and doc.get("ips"):
        report.succeeded += 1
        a.address = str(ipaddress.ip_interface(doc["ips"][0]["address"]).ip)
        return
    code = doc.get("code") if isinstance(doc, dict) else None
    if a.rc != 0 and isinstance(code, int) and code != 199 and isinstance(doc.get("msg"), str):
        report.failed_cleanly += 1
        a.code = code
        report.codes[code] = report.codes.get(code, 0) + 1
        return
    report.failed_badly += 1
    report.notes.append(f"{a.name}: rc {a.rc}: {a.stdout[:200]!r}")


def node_links(node: SimNode) -> set[str]:
    out = netns_exec(node.netns, "ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ": cali" in line}


def run(adds: int = 40, nodes: int = 4, workers: int = 10, kill_after: float = 0.25,
        down_s: float = 3.0) -> ChaosReport:
    report = ChaosReport(f"kill -9 etcd during {adds} concurrent ADDs on {nodes} nodes")
    with Cluster() as cluster:
        cluster.create_pool(POOL)
        sim = [cluster.add_node(f"chaos-{i}") for i in range(nodes)]
        attempts = []
        for i in range(adds):
            node = sim[i % nodes]
            cid = uuid.uuid4().hex
            a = Attempt(node, f"p{i}", f"{node.netns}-p{i}", cid,
                        f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{i};K8S_POD_INFRA_CONTAINER_ID={cid}")
            ip("netns", "add", a.netns)
            attempts.append(a)
        try:
            _storm(cluster, attempts, report, workers, kill_after, down_s)
            _gc_and_check(cluster, sim, attempts, report)
        finally:
            for a in attempts:
                if a.address is not None:
                    a.node.cni("DEL", a.node.netconf(), a.cid, a.netns_path, cni_args=a.args)
                ip("netns", "del", a.netns, check=False)
    return report


def _storm(cluster: Cluster, attempts: list[Attempt], report: ChaosReport, workers: int,
           kill_after: float, down_s: float) -> None:
    done = threading.Semaphore(0)

    def add(a: Attempt) -> Attempt:
        try:
            res = a.node.cni("ADD", a.node.netconf(), a.cid, a.netns_path, cni_args=a.args)
            a.rc, a.stdout = res.returncode, res.stdout
        except subprocess.TimeoutExpired:
            a.rc, a.stdout = -9, "(timed out)"
        a.finished = time.monotonic()
        done.release()
        return a

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(add, a) for a in attempts]
        for _ in range(max(1, int(len(attempts) * kill_after))):
            done.acquire()
        cluster.kill_etcd()
        killed = time.monotonic()
        time.sleep(down_s)
        cluster.restart_etcd()
        restarted = time.monotonic()
        # As kubelet would: one new pod per node right after the restart, retried on failure.
        probes = {node.name: node for node in {a.node.name: a.node for a in attempts}.values()}
        probe_futures = [pool.submit(_probe, node, attempts, done) for node in probes.values()]
        for f in as_completed(futures + probe_futures):
            f.result()
    for a in attempts:
        classify(a, report)
    converged = [f.result() for f in probe_futures]
    report.converge_s = max(converged) - restarted if all(converged) else float("inf")
    report.notes.append(f"etcd down {restarted - killed:.1f} s; "
                        f"{sum(1 for a in attempts if killed <= a.finished <= restarted)} ADDs ended while it was down")


def _probe(node: SimNode, attempts: list[Attempt], done: threading.Semaphore, tries: int = 5) -> float:
    """ADD a new pod on ``node`` until one succeeds; when it did (monotonic), 0.0 if never."""
    for i in range(tries):
        cid = uuid.uuid4().hex
        name = f"probe-{node.name}-{i}"
        a = Attempt(node, name, f"{node.netns}-pr{i}", cid,
                    f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}")
        ip("netns", "add", a.netns)
        attempts.append(a)
        res = node.cni("ADD", node.netconf(), a.cid, a.netns_path, cni_args=a.args)
        a.rc, a.stdout, a.finished = res.returncode, res.stdout, time.monotonic()
        if res.ok:
            return a.finished
        time.sleep(1)
    return 0.0


def _gc_and_check(cluster: Cluster, sim: list[SimNode], attempts: list[Attempt], report: ChaosReport) -> None:
    good = [a for a in attempts if a.address is not None]
    addresses = [a.address for a in good]
    report.duplicates = len(addresses) - len(set(addresses))
    handles_before = {h for _, h, _ in allocations(cluster.backend).values()}
    stale = handles_before - {f"{NETWORK}.{a.cid}" for a in good}
    report.notes.append(f"allocations without a successful ADD before GC: {len(stale)}")
    for node in sim:  # the runtime's GC: only the attachments whose ADD succeeded are valid
        conf = dict(node.netconf(), cniVersion="1.1.0")
        conf["cni.dev/valid-attachments"] = [{"containerID": a.cid, "ifname": "eth0"}
                                             for a in good if a.node is node]
        res = node.cni("GC", conf, "", "")
        if not res.ok:
            report.notes.append(f"GC on {node.name} failed: {res.stdout}")
            report.leaks_after_gc += 1
    backend = cluster.backend
    allocs = allocations(backend)  # also asserts no address is in two allocations
    handles = {f"{NETWORK}.{a.cid}": a for a in good}
    for address, (_, handle, _) in allocs.items():
        owner = handles.get(handle or "")
        if owner is None:
            report.leaks_after_gc += 1
            report.notes.append(f"leaked allocation {address} (handle {handle})")
        elif owner.address != address:
            report.duplicates += 1
            report.notes.append(f"{owner.name} got {owner.address} but its handle holds {address}")
    for a in good:
        if a.address not in allocs:
            report.notes.append(f"{a.name}: {a.address} returned by ADD but not allocated")
            report.duplicates += 1  # an address free for someone else while a pod uses it
    wep_cids = {kv.value["spec"].get("containerID") for kv in backend.list(ListOptions("WorkloadEndpoint")).items}
    good_cids = {a.cid for a in good}
    stray = wep_cids - good_cids
    if stray:
        report.leaks_after_gc += len(stray)
        report.notes.append(f"{len(stray)} endpoints without a successful ADD")
    links = sum(len(node_links(n)) for n in sim)
    if links != len(good):
        report.leaks_after_gc += abs(links - len(good))
        report.notes.append(f"{links} cali veths on the nodes for {len(good)} pods")
