"""Scenario: kill -9 the kube-apiserver during concurrent ADDs (Kubernetes datastore).

Pods of several nodes (node identities are ``nodename``s; pods are netns on
this host) are added concurrently through the real ``calico`` + ``calico-ipam``
against a private kube-apiserver; part-way it is SIGKILLed (its etcd keeps
running), left down, and started again. Then each node runs CNI GC with the
attachments whose ADD succeeded. Checked as for etcd: every ADD gave a result
or error JSON, no address is held twice, after GC every allocation belongs to
a successful ADD, failed ADDs left no host veth, and ADDs work again after the
restart.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from cni.names import Workload
from tests.chaos.etcd_kill import NETWORK, Attempt, classify
from tests.chaos.report import ChaosReport
from tests.ipam.helpers import allocations
from tests.support.cni_exec import exec_plugin, make_cni_path
from tests.support.kube_apiserver import KubeApiServer
from tests.support.pools import create_pool

POOL = "10.69.0.0/16"


@dataclass
class Node:  # what Attempt needs of a node here: a name
    name: str


def _host_link(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def run(adds: int = 16, nodes: int = 2, workers: int = 6, kill_after: float = 0.25,
        down_s: float = 3.0) -> ChaosReport:
    from datastore.kubernetes import KubernetesBackend

    report = ChaosReport(f"kill -9 kube-apiserver during {adds} concurrent ADDs on {nodes} nodes (KDD)")
    workdir = tempfile.mkdtemp(prefix="pycalico-kdd-chaos-")
    cni_path = make_cni_path(os.path.join(workdir, "bin"))
    with KubeApiServer() as kube:
        kube.install_crds()
        backend = KubernetesBackend(kubeconfig=kube.kubeconfig)
        create_pool(backend, "kdd-chaos-pool", POOL)
        names = [f"kdd-{uuid.uuid4().hex[:4]}-{i}" for i in range(nodes)]

        def conf(node: str, version: str = "1.0.0") -> dict[str, Any]:
            return {"cniVersion": version, "name": NETWORK, "type": "calico", "datastore_type": "kubernetes",
                    "kubernetes": {"kubeconfig": kube.kubeconfig}, "nodename": node,
                    "log_file_path": os.path.join(workdir, "cni.log"),
                    "ipam_lock_file": os.path.join(workdir, f"{node}.lock"), "ipam": {"type": "calico-ipam"}}

        def new_attempt(i: int | str, node: str) -> Attempt:
            cid = uuid.uuid4().hex
            name = f"p{i}-{cid[:6]}"
            a = Attempt(Node(node), name, f"pckdd-{cid[:8]}", cid,  # type: ignore[arg-type]
                        f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}")
            subprocess.run(["ip", "netns", "add", a.netns], check=True)
            kube.create_pod("default", name, node)
            return a

        def add(a: Attempt) -> Attempt:
            res = exec_plugin(cni_path, "calico", "ADD", conf(a.node.name), container_id=a.cid,
                              netns=a.netns_path, cni_args=a.args)
            a.rc, a.stdout, a.finished = res.returncode, res.stdout, time.monotonic()
            return a

        attempts = [new_attempt(i, names[i % nodes]) for i in range(adds)]
        try:
            done = threading.Semaphore(0)

            def add_and_count(a: Attempt) -> Attempt:
                add(a)
                done.release()
                return a

            def probe(node: str) -> float:
                for i in range(10):
                    a = new_attempt(f"probe{i}", node)
                    attempts.append(a)
                    if add(a).rc == 0:
                        return a.finished
                    time.sleep(1)
                return 0.0

            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(add_and_count, a) for a in attempts]
                for _ in range(max(1, int(adds * kill_after))):
                    done.acquire()
                assert kube.proc is not None
                kube.proc.kill()
                kube.proc.wait(10)
                killed = time.monotonic()
                time.sleep(down_s)
                kube.start()
                restarted = time.monotonic()
                probes = [pool.submit(probe, n) for n in names]
                for f in as_completed(futures + probes):
                    f.result()
            for a in attempts:
                classify(a, report)
            converged = [p.result() for p in probes]
            report.converge_s = max(converged) - restarted if all(converged) else float("inf")
            report.notes.append(f"kube-apiserver down {restarted - killed:.1f} s (restart included)")
            _gc_and_check(backend, conf, names, attempts, report, cni_path)
        finally:
            for a in attempts:
                if a.address is not None:
                    exec_plugin(cni_path, "calico", "DEL", conf(a.node.name), container_id=a.cid,
                                netns=a.netns_path, cni_args=a.args)
                subprocess.run(["ip", "netns", "del", a.netns], capture_output=True)
            backend.close()
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _gc_and_check(backend: Any, conf: Any, names: list[str], attempts: list[Attempt], report: ChaosReport,
                  cni_path: str) -> None:
    good = [a for a in attempts if a.address is not None]
    addresses = [a.address for a in good]
    report.duplicates = len(addresses) - len(set(addresses))
    stale = {h for _, h, _ in allocations(backend).values()} - {f"{NETWORK}.{a.cid}" for a in good}
    report.notes.append(f"allocations without a successful ADD before GC: {len(stale)}")
    for node in names:
        gc_conf = conf(node, "1.1.0")
        gc_conf["cni.dev/valid-attachments"] = [{"containerID": a.cid, "ifname": "eth0"}
                                                for a in good if a.node.name == node]
        res = exec_plugin(cni_path, "calico", "GC", gc_conf)
        if not res.ok:
            report.notes.append(f"GC on {node} failed: {res.stdout}")
            report.leaks_after_gc += 1
    allocs = allocations(backend)
    owners = {f"{NETWORK}.{a.cid}": a for a in good}
    for address, (_, handle, _) in allocs.items():
        owner = owners.get(handle or "")
        if owner is None:
            report.leaks_after_gc += 1
            report.notes.append(f"leaked allocation {address} (handle {handle})")
        elif owner.address != address:
            report.duplicates += 1
    for a in good:
        if a.address not in allocs:
            report.duplicates += 1
            report.notes.append(f"{a.name}: {a.address} returned by ADD but not allocated")
    for a in attempts:
        host_if = Workload.from_args(a.node.name, a.cid, "eth0", {"K8S_POD_NAMESPACE": "default",
                                                                  "K8S_POD_NAME": a.name}).host_ifname
        if (a.address is not None) != _host_link(host_if):
            report.leaks_after_gc += 1
            report.notes.append(f"{a.name}: host veth {host_if} {'missing' if a.address else 'left behind'}")
