"""CNI ADD/DEL latency of calico + calico-ipam on the Kubernetes datastore,
next to etcd mode, in the same run; plus the API requests one steady-state
ADD and DEL make (from the API server's audit log).

    .venv/bin/python bench/kdd_bench.py [-n 30] [--admin]

Starts its own etcd and its own kube-apiserver (scripts/build-kube-apiserver),
pre-creates one Pod per iteration (kubelet would have), and uses the
calico-cni-plugin ServiceAccount token (least-privilege RBAC) unless --admin.
Every iteration uses a fresh network namespace; all are removed.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datastore.etcd import EtcdBackend  # noqa: E402
from datastore.kubernetes import KubernetesBackend  # noqa: E402
from tests.support.cni_exec import exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402
from tests.support.kube_apiserver import KubeApiServer, describe  # noqa: E402
from tests.support.pools import create_pool  # noqa: E402

NAMESPACE = "bench"
NODE = "bench-node"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def netconf(tmp: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": NODE,
        "log_level": "info", "log_file_path": os.path.join(tmp, "cni.log"),
        "ipam_lock_file": os.path.join(tmp, "ipam.lock"), "mtu": 1450,
        "ipam": {"type": "calico-ipam"}, **fields,
    }


def cycle(cni_path: str, conf: dict[str, Any], pod: str, kube: KubeApiServer | None,
          user: str | None, out: dict[str, Any], steady: bool) -> None:
    """One ADD + DEL in a fresh netns; record times (and API requests) if steady."""
    ns = f"kb-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    path = f"/var/run/netns/{ns}"
    cid = f"kb{uuid.uuid4().hex[:14]}"
    args = f"K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"
    try:
        for command in ("ADD", "DEL"):
            offset = kube.audit_offset() if kube else 0
            start = time.perf_counter()
            res = exec_plugin(cni_path, "calico", command, conf, container_id=cid, netns=path, cni_args=args)
            elapsed = (time.perf_counter() - start) * 1000
            if not res.ok:
                raise SystemExit(f"{command} failed: {res.stdout} {res.stderr[-600:]}")
            if steady:
                out[command].append(elapsed)
                if kube is not None:
                    out["requests"][command].append(
                        collections.Counter(describe(e) for e in kube.audit_events(offset, user)))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def summarize(counters: list[collections.Counter[str]]) -> tuple[float, dict[str, float]]:
    if not counters:
        return 0.0, {}
    total = collections.Counter[str]()
    for c in counters:
        total.update(c)
    n = len(counters)
    return sum(total.values()) / n, {k: v / n for k, v in sorted(total.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="ADD+DEL cycles per datastore (plus one warm-up)")
    parser.add_argument("--admin", action="store_true", help="use the admin client certificate, not the CNI role")
    opts = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="kdd-bench-")
    cni_path = make_cni_path(os.path.join(tmp, "bin"))
    pods = [f"p{i}" for i in range(opts.n + 1)]
    results: dict[str, dict[str, Any]] = {}
    with EtcdServer() as etcd, KubeApiServer() as kube:
        kube.install_crds()
        kube.install_rbac()
        etcd_backend = EtcdBackend(etcd.endpoint)
        create_pool(etcd_backend, "bench-pool", "10.125.0.0/16")
        kube_backend = KubernetesBackend(kubeconfig=kube.kubeconfig)
        create_pool(kube_backend, "bench-pool", "10.125.0.0/16")
        for pod in pods:
            kube.create_pod(NAMESPACE, pod, NODE)
        if opts.admin:
            kubeconfig, user = kube.kubeconfig, "pycalico-admin"
        else:
            token = kube.request_token("kube-system", "calico-cni-plugin")
            kubeconfig = kube.token_kubeconfig(token, os.path.join(tmp, "cni.kubeconfig"))
            user = "system:serviceaccount:kube-system:calico-cni-plugin"
        confs = {
            "etcd": (netconf(tmp, {"datastore_type": "etcdv3", "etcd_endpoints": etcd.endpoint}), None),
            "kubernetes": (netconf(tmp, {"datastore_type": "kubernetes",
                                         "kubernetes": {"kubeconfig": kubeconfig}}), kube),
        }
        for name in confs:
            results[name] = {"ADD": [], "DEL": [], "requests": {"ADD": [], "DEL": []}}
        # Interleaved, so load on the machine hits both series alike. The first
        # cycle claims each datastore's block: not steady state, not counted.
        for i, pod in enumerate(pods):
            for name, (conf, server) in confs.items():
                cycle(cni_path, conf, pod, server, user if server else None, results[name], steady=i > 0)
        etcd_backend.close()
        kube_backend.close()
    print(f"\ncalico + calico-ipam, n={opts.n} steady-state cycles per datastore (fresh netns each; ms)")
    print(f"{'datastore':<12}{'ADD p50':>9}{'ADD p95':>9}{'DEL p50':>9}{'DEL p95':>9}")
    for name, r in results.items():
        print(f"{name:<12}{pct(r['ADD'], .5):>9.1f}{pct(r['ADD'], .95):>9.1f}"
              f"{pct(r['DEL'], .5):>9.1f}{pct(r['DEL'], .95):>9.1f}")
    for command in ("ADD", "DEL"):
        mean, per = summarize(results["kubernetes"]["requests"][command])
        detail = ", ".join(f"{k} {v:g}" for k, v in per.items())
        print(f"API requests per {command} (kubernetes, mean of {len(results['kubernetes']['requests'][command])}): "
              f"{mean:g}: {detail}")


if __name__ == "__main__":
    main()
