"""pycalico demo: pods networked by the real `calico` + `calico-ipam` plugins.

Part 1, one node: starts a throwaway etcd, creates an IPPool, ADDs two pods
(network namespaces) on this host, shows their addresses, routes and
WorkloadEndpoints, pings pod to pod, then DELs them and shows nothing is left.

Part 2, two simulated nodes (network namespaces on a private bridge), each
running calico-confd + BIRD: a pod on each node; the pods reach each other over
the block routes BIRD learned by BGP (tests/support/nodes.py).

Everything it creates it removes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datastore.etcd import EtcdBackend  # noqa: E402
from datastore.keys import ListOptions  # noqa: E402
from tests.support.cni_exec import exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402
from tests.support.netns import Netns  # noqa: E402
from tests.support.pools import create_pool  # noqa: E402


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="pycalico-demo-")
    try:
        return demo(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo(tmp: str) -> int:
    cni_path = make_cni_path(os.path.join(tmp, "bin"))
    with EtcdServer() as etcd:
        backend = EtcdBackend(etcd.endpoint)
        step(f"etcd at {etcd.endpoint}; IPPool demo-pool 10.77.0.0/16 (blockSize 26)")
        create_pool(backend, "demo-pool", "10.77.0.0/16")
        conf = {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
            "etcd_endpoints": etcd.endpoint, "nodename": "demo-node",
            "log_file_path": os.path.join(tmp, "cni.log"), "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
            "ipam": {"type": "calico-ipam"},
        }
        pods: list[tuple[Netns, str, str]] = []
        host_ifaces: list[str] = []
        try:
            for name in ("web", "db"):
                ns = Netns("demo").__enter__()
                cid = f"demo-{name}-{ns.name[-8:]}"
                pods.append((ns, cid, name))
                res = exec_plugin(cni_path, "calico", "ADD", conf, container_id=cid, netns=ns.path,
                                  cni_args=f"K8S_POD_NAMESPACE=demo;K8S_POD_NAME={name}")
                if not res.ok:
                    print(res.stdout, res.stderr[-2000:])
                    return 1
                ip = res.json["ips"][0]["address"]
                host_ifaces.append(res.json["interfaces"][0]["name"])
                step(f"ADD pod demo/{name}: {ip} on host veth {res.json['interfaces'][0]['name']}")
                print(ns.run("ip", "-br", "addr", "show", "eth0").stdout.strip())
                print(ns.run("ip", "route").stdout.strip())
            step("WorkloadEndpoints in etcd")
            for kv in backend.list(ListOptions("WorkloadEndpoint")).items:
                print(f"  {kv.key.namespace}/{kv.key.name}: {kv.value['spec']['ipNetworks']} "
                      f"-> {kv.value['spec']['interfaceName']}")
            (ns_a, _, _), (ns_b, _, _) = pods
            ip_b = ns_b.run("ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]
            step(f"ping from pod web to pod db ({ip_b}) through the host")
            ping = ns_a.run("ping", "-c", "3", "-W", "2", ip_b)
            print(ping.stdout.strip())
            if ping.returncode != 0:
                return 1
        finally:
            for ns, cid, name in pods:
                exec_plugin(cni_path, "calico", "DEL", conf, container_id=cid, netns=ns.path,
                            cni_args=f"K8S_POD_NAMESPACE=demo;K8S_POD_NAME={name}")
                ns.delete()
        left = sum(1 for kv in backend.list(ListOptions("Block")).items
                   for a in kv.value.get("allocations") or [] if a is not None)
        weps = len(backend.list(ListOptions("WorkloadEndpoint")).items)
        links = [i for i in host_ifaces
                 if subprocess.run(["ip", "link", "show", i], capture_output=True).returncode == 0]
        step(f"DEL both pods: {left} addresses allocated, {weps} endpoints, {len(links)} of their veths left")
        backend.close()
        if left or weps or links:
            return 1
    step("two simulated nodes, calico-confd + BIRD on each, a pod on each")
    from tests.support.nodes import demo as two_node_demo

    if not two_node_demo():
        return 1
    print("\ndemo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
