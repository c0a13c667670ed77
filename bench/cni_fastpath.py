"""CNI fast path latency: ADD/DEL p50/p95 of the Go reference bridge +
host-local, standalone calico + calico-ipam, and calico through the node's
CNI service (:mod:`cni.service`), exec'd the same way, interleaved in one run.

    .venv/bin/python bench/cni_fastpath.py [-n 40] [--png docs/cni-latency.png]
                                           [--calico-bin DIR]

Prints a table (p50, p95, mean, ratio of p50 to the reference), the etcd
requests one ADD and one DEL cost on each calico path (etcd's own
``grpc_server_handled_total`` counters: what reached the server), and draws
the latency distributions (ECDF per series, ADD and DEL) as a PNG. Charts need
matplotlib (``pip install matplotlib``: bench only, not a runtime dependency);
without it the table is still printed. Starts its own etcd and service;
creates and removes its own namespaces and bridge.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.cni_exec import REFERENCE_PLUGINS, exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer, kv_requests as etcd_requests  # noqa: E402

REF = "bridge+host-local (Go)"
STANDALONE = "calico standalone"
FAST = "calico fast path"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def add_del(cni_path: str, plugin: str, conf: dict[str, Any], env: dict[str, str]) -> tuple[float, float]:
    ns = f"bfp-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    path = f"/var/run/netns/{ns}"
    cid = f"bench{uuid.uuid4().hex[:12]}"
    try:
        start = time.perf_counter()
        res = exec_plugin(cni_path, plugin, "ADD", conf, container_id=cid, netns=path, extra_env=env)
        add_ms = (time.perf_counter() - start) * 1000
        if not res.ok:
            raise SystemExit(f"{plugin} ADD failed: {res.stdout} {res.stderr[-400:]}")
        start = time.perf_counter()
        res = exec_plugin(cni_path, plugin, "DEL", conf, container_id=cid, netns=path, extra_env=env)
        del_ms = (time.perf_counter() - start) * 1000
        if not res.ok:
            raise SystemExit(f"{plugin} DEL failed: {res.stdout} {res.stderr[-400:]}")
        return add_ms, del_ms
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def round_trips(endpoint: str, cni_path: str, conf: dict[str, Any], env: dict[str, str]) -> tuple[int, int]:
    """etcd requests of one ADD and one DEL (nothing else uses this etcd meanwhile)."""
    ns = f"bfp-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cid = f"bench{uuid.uuid4().hex[:12]}"
    counts = []
    try:
        for command in ("ADD", "DEL"):
            before = etcd_requests(endpoint)
            res = exec_plugin(cni_path, "calico", command, conf, container_id=cid, netns=f"/var/run/netns/{ns}",
                              extra_env=env)
            if not res.ok:
                raise SystemExit(f"calico {command} failed: {res.stdout} {res.stderr[-400:]}")
            counts.append(etcd_requests(endpoint) - before)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return counts[0], counts[1]


def start_service(sock: str, log_file: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [os.path.join(REPO, ".venv", "bin", "python"), "-m", "cni.service", "--socket", sock,
         "--log-level", "warning", "--log-file", log_file],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the CNI service did not start (see {log_file})")
        time.sleep(0.02)
    return proc


def chart(samples: dict[tuple[str, str], list[float]], png: str, n: int, calico: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return False
    colours = {REF: "#4c72b0", STANDALONE: "#c44e52", FAST: "#55a868"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, op in zip(axes, ("ADD", "DEL")):
        for series in (REF, STANDALONE, FAST):
            values = sorted(samples[(op, series)])
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=f"{series} (p50 {pct(values, 0.5):.0f} ms)",
                    color=colours[series], linewidth=2)
        ax.set_xscale("log")
        ticks = [t for t in (5, 10, 20, 50, 100, 200, 500, 1000, 2000) if t <= 2 * max(samples[(op, STANDALONE)])]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency per exec, ms (log scale)")
        ax.set_title(f"CNI {op}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("fraction of execs (ECDF)")
    fig.suptitle(f"pycalico CNI latency: reference vs standalone vs fast path "
                 f"(n={n} each, etcd datastore, calico: {calico})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"chart: {png}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--png", default=os.path.join(REPO, "docs", "cni-latency.png"))
    parser.add_argument("--calico-bin", help="directory with calico/calico-ipam to bench (default: venv entry points)")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="pcfb-", dir="/tmp")
    cni_path = make_cni_path(os.path.join(tmp, "bin"), args.calico_bin)
    sock = os.path.join(tmp, "cni.sock")
    bridge = f"pcf{uuid.uuid4().hex[:6]}"
    ref_conf = {
        "cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": bridge,
        "isGateway": False, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": "10.249.0.0/16", "dataDir": os.path.join(tmp, "hl")},
    }
    samples: dict[tuple[str, str], list[float]] = {(op, s): [] for op in ("ADD", "DEL") for s in (REF, STANDALONE, FAST)}
    service = None
    trips: dict[str, tuple[int, int]] = {}
    with EtcdServer() as etcd:
        from datastore.etcd import EtcdBackend
        from tests.support.pools import create_pool

        backend = EtcdBackend(etcd.endpoint)
        create_pool(backend, "bench-pool", "10.248.0.0/16")
        backend.close()
        calico_conf = {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
            "etcd_endpoints": etcd.endpoint, "nodename": "bench-node", "log_level": "warning",
            "log_file_path": os.path.join(tmp, "cni.log"), "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
            "ipam": {"type": "calico-ipam"},
        }
        try:
            service = start_service(sock, os.path.join(tmp, "service.log"))
            plan = [
                (REF, "bridge", ref_conf, {}),
                (STANDALONE, "calico", calico_conf, {"PYCALICO_CNI_SOCKET": "none"}),
                (FAST, "calico", calico_conf, {"PYCALICO_CNI_SOCKET": sock}),
            ]
            for _, plugin, conf, env in plan:  # warm page cache, service connection, bridge
                add_del(cni_path, plugin, conf, env)
            for i in range(args.n):  # interleaved: load drift hits every series alike
                for series, plugin, conf, env in plan:
                    add_ms, del_ms = add_del(cni_path, plugin, conf, env)
                    samples[("ADD", series)].append(add_ms)
                    samples[("DEL", series)].append(del_ms)
            trips = {series: round_trips(etcd.endpoint, cni_path, conf, env)
                     for series, plugin, conf, env in plan if plugin == "calico"}
        finally:
            if service is not None and service.poll() is None:
                service.send_signal(signal.SIGTERM)
                service.wait(30)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)

    print(f"\nCNI latency, n={args.n} per series (interleaved, etcd datastore), ms; "
          f"reference plugins from {REFERENCE_PLUGINS}; calico from {args.calico_bin or 'venv entry points'}")
    print(f"{'op':5} {'series':26} {'p50':>8} {'p95':>8} {'mean':>8} {'x ref p50':>10} {'x standalone p50':>17}")
    for op in ("ADD", "DEL"):
        ref = pct(samples[(op, REF)], 0.5)
        alone = pct(samples[(op, STANDALONE)], 0.5)
        for series in (REF, STANDALONE, FAST):
            values = samples[(op, series)]
            p50 = pct(values, 0.5)
            print(f"{op:5} {series:26} {p50:8.1f} {pct(values, 0.95):8.1f} {statistics.mean(values):8.1f} "
                  f"{p50 / ref:10.2f} {p50 / alone:17.2f}")
    print("\netcd requests per operation (etcd's grpc_server_handled_total, KV service):")
    for series, (add_n, del_n) in trips.items():
        print(f"  {series:26} ADD {add_n:3d}   DEL {del_n:3d}")
    chart(samples, args.png, args.n, "frozen bundle" if args.calico_bin else "venv entry points")


if __name__ == "__main__":
    main()
