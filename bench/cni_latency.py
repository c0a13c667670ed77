"""CNI ADD/DEL latency: calico + calico-ipam against the Go reference
bridge + host-local, exec'd the same way in the same run.

    .venv/bin/python bench/cni_latency.py [-n 50] [--frozen-dir DIST] [--version-only]

Prints a table of p50/p95 per series and the ratio to the reference. Starts
its own etcd; creates and removes its own namespaces and bridge.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.cni_exec import REFERENCE_PLUGINS, exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def run_series(cni_path: str, plugin: str, conf: dict[str, Any], n: int) -> tuple[list[float], list[float]]:
    adds, dels = [], []
    for i in range(n):
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        path = f"/var/run/netns/{ns}"
        cid = f"bench{uuid.uuid4().hex[:12]}"
        try:
            holder: dict[str, Any] = {}
            adds.append(timed(lambda: holder.update(r=exec_plugin(cni_path, plugin, "ADD", conf, container_id=cid, netns=path))))
            if not holder["r"].ok:
                raise SystemExit(f"{plugin} ADD failed: {holder['r'].stdout} {holder['r'].stderr[-400:]}")
            dels.append(timed(lambda: holder.update(r=exec_plugin(cni_path, plugin, "DEL", conf, container_id=cid, netns=path))))
            if not holder["r"].ok:
                raise SystemExit(f"{plugin} DEL failed: {holder['r'].stdout}")
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return adds, dels


def version_series(cni_path: str, plugin: str, n: int) -> list[float]:
    return [timed(lambda: exec_plugin(cni_path, plugin, "VERSION", {"cniVersion": "1.0.0"})) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--frozen-dir", help="directory with frozen calico/calico-ipam to add as a series")
    args = parser.parse_args()

    rows: list[tuple[str, str, list[float]]] = []
    tmp = tempfile.mkdtemp(prefix="pycalico-bench-")
    bridge = f"pcb{uuid.uuid4().hex[:6]}"
    ref_conf = {
        "cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": bridge,
        "isGateway": False, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": "10.251.0.0/16", "dataDir": os.path.join(tmp, "hl")},
    }
    series: list[tuple[str, str, str]] = [("python", make_cni_path(os.path.join(tmp, "py")), "venv entry points")]
    if args.frozen_dir:
        series.append(("frozen", make_cni_path(os.path.join(tmp, "frozen"), args.frozen_dir), args.frozen_dir))
    ref_path = series[0][1]

    with EtcdServer() as etcd:
        from datastore.etcd import EtcdBackend
        from tests.support.pools import create_pool

        backend = EtcdBackend(etcd.endpoint)
        create_pool(backend, "bench-pool", "10.252.0.0/16")
        backend.close()
        calico_conf = {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
            "etcd_endpoints": etcd.endpoint, "nodename": "bench-node", "log_level": "warning",
            "log_file_path": os.path.join(tmp, "cni.log"), "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
            "ipam": {"type": "calico-ipam"},
        }
        try:
            rows.append(("VERSION", "host-local (Go)", version_series(ref_path, "host-local", args.n)))
            for name, path, _ in series:
                rows.append(("VERSION", f"calico ({name})", version_series(path, "calico", args.n)))
            add, dele = run_series(ref_path, "bridge", ref_conf, args.n)
            rows += [("ADD", "bridge+host-local (Go)", add), ("DEL", "bridge+host-local (Go)", dele)]
            for name, path, _ in series:
                add, dele = run_series(path, "calico", calico_conf, args.n)
                rows += [("ADD", f"calico+calico-ipam ({name})", add), ("DEL", f"calico+calico-ipam ({name})", dele)]
        finally:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)

    reference = {op: pct(s, 0.5) for op, label, s in rows if "(Go)" in label}
    print(f"\nCNI latency, n={args.n} per series, ms (reference plugins from {REFERENCE_PLUGINS})")
    print(f"{'op':8} {'series':32} {'p50':>8} {'p95':>8} {'mean':>8} {'x ref p50':>10}")
    for op, label, samples in rows:
        p50 = pct(samples, 0.5)
        print(f"{op:8} {label:32} {p50:8.1f} {pct(samples, 0.95):8.1f} {statistics.mean(samples):8.1f} "
              f"{p50 / reference[op]:10.1f}")


if __name__ == "__main__":
    main()
