"""Exec latency of the frozen calico / calico-ipam against the Go reference
plugins, exec'd the same way, in the same run.

    .venv/bin/python bench/exec_latency.py [-n 50] [--bundle DIR] [--onefile DIR] [--python] [--profile]

Series (rounds are interleaved: sample i of every series is taken before
sample i+1 of any, so machine noise hits all series alike):

  VERSION   /bin/true (exec floor), host-local (Go), calico and calico-ipam
            frozen onedir [, frozen onefile] [, venv entry point]
  ADD/DEL   bridge + host-local (Go) vs calico + calico-ipam frozen with etcd
            [, venv entry points]

Prints a table of p50/p95 with ratios to the Go reference and the issue's
targets (VERSION p50 < 50 ms, ADD p50 < 150 ms). ``--profile`` also profiles
one ADD of the Python entry points (``-X importtime`` and cProfile of both
calico and the calico-ipam it execs) and prints where the time goes.

Uses bench/cni_latency.py's helpers (pct, timed, exec via tests/support).
Starts its own etcd; creates and removes its own namespaces and bridge.
"""
from __future__ import annotations

import argparse
import glob
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from cni_latency import pct, timed  # noqa: E402
from tests.support.cni_exec import VENV_BIN, exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402

VERSION_CONF = {"cniVersion": "1.0.0"}
TARGETS = {"VERSION": 50.0, "ADD": 150.0}


def build_bundle(onefile: bool = False) -> str:
    cmd = [os.path.join(REPO, "packaging", "build")] + (["--onefile"] if onefile else [])
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


class Series:
    def __init__(self, op: str, label: str, sample: Callable[[], float], reference: bool = False) -> None:
        self.op, self.label, self.sample, self.reference = op, label, sample, reference
        self.samples: list[float] = []


def version_sample(cni_path: str, plugin: str) -> Callable[[], float]:
    def run() -> float:
        holder: dict[str, Any] = {}
        ms = timed(lambda: holder.update(r=exec_plugin(cni_path, plugin, "VERSION", VERSION_CONF)))
        if not holder["r"].ok:
            raise SystemExit(f"{plugin} VERSION failed: {holder['r'].stdout} {holder['r'].stderr[-300:]}")
        return ms
    return run


def exec_floor() -> float:
    return timed(lambda: subprocess.run(["/bin/true"], capture_output=True))


class AddDel:
    """One ADD then one DEL in a fresh netns per round; two Series share it."""

    def __init__(self, cni_path: str, plugin: str, conf: dict[str, Any]) -> None:
        self.cni_path, self.plugin, self.conf = cni_path, plugin, conf
        self.pending_del: float | None = None

    def add(self) -> float:
        ns = f"bel-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        path, cid = f"/var/run/netns/{ns}", f"bench{uuid.uuid4().hex[:12]}"
        try:
            holder: dict[str, Any] = {}
            add_ms = timed(lambda: holder.update(r=exec_plugin(self.cni_path, self.plugin, "ADD", self.conf,
                                                               container_id=cid, netns=path)))
            if not holder["r"].ok:
                raise SystemExit(f"{self.plugin} ADD failed: {holder['r'].stdout} {holder['r'].stderr[-400:]}")
            self.pending_del = timed(lambda: holder.update(r=exec_plugin(self.cni_path, self.plugin, "DEL", self.conf,
                                                                         container_id=cid, netns=path)))
            if not holder["r"].ok:
                raise SystemExit(f"{self.plugin} DEL failed: {holder['r'].stdout}")
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        return add_ms

    def delete(self) -> float:
        assert self.pending_del is not None
        value, self.pending_del = self.pending_del, None
        return value


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_bench(args: argparse.Namespace) -> None:
    bundle = args.bundle or build_bundle()
    onefile = args.onefile
    tmp = tempfile.mkdtemp(prefix="pycalico-execlat-")
    bridge = f"pel{uuid.uuid4().hex[:6]}"
    frozen_path = make_cni_path(os.path.join(tmp, "frozen"), bundle)
    py_path = make_cni_path(os.path.join(tmp, "py"), VENV_BIN)
    series: list[Series] = [
        Series("VERSION", "/bin/true (exec floor)", exec_floor),
        Series("VERSION", "host-local (Go)", version_sample(frozen_path, "host-local"), reference=True),
        Series("VERSION", "calico (frozen onedir)", version_sample(frozen_path, "calico")),
        Series("VERSION", "calico-ipam (frozen onedir)", version_sample(frozen_path, "calico-ipam")),
    ]
    if onefile:
        series.append(Series("VERSION", "calico (frozen onefile)",
                             version_sample(make_cni_path(os.path.join(tmp, "onefile"), onefile), "calico")))
    if args.python:
        series.append(Series("VERSION", "calico (venv python)", version_sample(py_path, "calico")))
    ref_conf = {
        "cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": bridge,
        "isGateway": False, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": "10.249.0.0/16", "dataDir": os.path.join(tmp, "hl")},
    }
    print(f"bundle {bundle}; load average at start {loadavg()}", flush=True)
    try:
        with EtcdServer() as etcd:
            from datastore.etcd import EtcdBackend
            from tests.support.pools import create_pool

            backend = EtcdBackend(etcd.endpoint)
            create_pool(backend, "execlat-pool", "10.248.0.0/16")
            backend.close()
            calico_conf = {
                "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                "etcd_endpoints": etcd.endpoint, "nodename": "execlat-node", "log_level": "warning",
                "log_file_path": os.path.join(tmp, "cni.log"), "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
                "ipam": {"type": "calico-ipam"},
            }
            pairs = [("bridge+host-local (Go)", AddDel(frozen_path, "bridge", ref_conf), True),
                     ("calico+calico-ipam (frozen, etcd)", AddDel(frozen_path, "calico", calico_conf), False)]
            if args.python:
                pairs.append(("calico+calico-ipam (venv, etcd)", AddDel(py_path, "calico", calico_conf), False))
            for label, pair, ref in pairs:
                series.append(Series("ADD", label, pair.add, reference=ref))
                series.append(Series("DEL", label, pair.delete, reference=ref))
            for _ in range(args.warmup):
                for s in series:
                    s.sample()
            for i in range(args.n):
                for s in series:
                    s.samples.append(s.sample())
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(series, args.n)


def print_table(series: list[Series], n: int) -> None:
    ref = {s.op: s for s in series if s.reference}
    print(f"\nExec latency, n={n} per series (interleaved rounds), ms; load average at end {loadavg()}")
    header = f"{'op':8} {'series':36} {'p50':>8} {'p95':>8} {'mean':>8} {'p50/ref':>8} {'p95/ref':>8}"
    print(header)
    print("-" * len(header))
    for s in series:
        p50, p95 = pct(s.samples, 0.5), pct(s.samples, 0.95)
        r = ref.get(s.op)
        if r is None or s.label.startswith("/bin/true"):
            r50 = r95 = ""
        else:
            r50, r95 = f"{p50 / pct(r.samples, 0.5):.1f}", f"{p95 / pct(r.samples, 0.95):.1f}"
        print(f"{s.op:8} {s.label:36} {p50:8.1f} {p95:8.1f} {statistics.mean(s.samples):8.1f} {r50:>8} {r95:>8}")
    print()
    for s in series:
        target = TARGETS.get(s.op)
        if target and s.label.startswith("calico") and "frozen" in s.label:
            p50 = pct(s.samples, 0.5)
            print(f"target {s.op} p50 < {target:.0f} ms: {s.label}: {p50:.0f} ms, "
                  f"{'meets it' if p50 < target else 'MISSES it'}")


# -- profile ---------------------------------------------------------------------


def _wrappers(directory: str, mode: str) -> None:
    """calico / calico-ipam in ``directory`` that run the venv entry points
    under -X importtime or cProfile, writing to files next to them."""
    py = os.path.join(REPO, ".venv", "bin", "python")
    for name in ("calico", "calico-ipam"):
        entry = os.path.join(VENV_BIN, name)
        if mode == "importtime":
            body = f'exec {py} -X importtime {entry} "$@" 2>"{directory}/{name}.$$.importtime"'
        else:
            body = f'exec {py} -m cProfile -o "{directory}/{name}.$$.prof" {entry} "$@"'
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(path, 0o755)


def _importtime_summary(path: str, top: int = 12) -> tuple[float, list[tuple[float, str]]]:
    """Total import time and the heaviest top-level imports (ms)."""
    rows = []
    for line in open(path):
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        indent = len(name) - len(name.lstrip())
        rows.append((indent, int(cumulative) / 1000, name.strip()))
    base = min(i for i, _, _ in rows)
    tops = sorted(((ms, n) for i, ms, n in rows if i == base), reverse=True)
    return sum(ms for ms, _ in tops), tops[:top]


def _prof_summary(path: str) -> dict[str, float]:
    stats = pstats.Stats(path)
    out: dict[str, float] = {"total": 0.0}
    keys = {
        "imports": ("<frozen importlib._bootstrap>", "_find_and_load"),
        "exec calico-ipam (wait)": ("ipam_exec.py", "exec_ipam"),
        "netlink (dataplane.setup)": ("dataplane.py", "setup"),
        "etcd HTTP (EtcdBackend._post)": ("etcd.py", "_post"),
        "netconf validation (parse_netconf)": ("netconf.py", "parse_netconf"),
        "IPAM lock": ("lock.py", "__enter__"),
    }
    for (file, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        for label, (f, fn) in keys.items():
            if file.endswith(f) and func == fn:
                out[label] = max(out.get(label, 0.0), cum * 1000)
        if func == "<module>" and file.endswith(("/bin/calico", "/bin/calico-ipam")):
            out["total"] = cum * 1000
    return out


def run_profile() -> None:
    tmp = tempfile.mkdtemp(prefix="pycalico-prof-")
    try:
        with EtcdServer() as etcd:
            from datastore.etcd import EtcdBackend
            from tests.support.pools import create_pool

            backend = EtcdBackend(etcd.endpoint)
            create_pool(backend, "prof-pool", "10.247.0.0/16")
            backend.close()
            conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                    "etcd_endpoints": etcd.endpoint, "nodename": "prof-node", "log_level": "warning",
                    "log_file_path": os.path.join(tmp, "cni.log"), "ipam_lock_file": os.path.join(tmp, "l"),
                    "ipam": {"type": "calico-ipam"}}
            for mode in ("importtime", "cprofile"):
                d = os.path.join(tmp, mode)
                os.makedirs(d)
                _wrappers(d, mode)
                cni_path = make_cni_path(d)  # our wrappers + the reference plugins
                for round_ in range(2):  # the second ADD is the one reported (warm page cache)
                    ns = f"bpr-{uuid.uuid4().hex[:8]}"
                    subprocess.run(["ip", "netns", "add", ns], check=True)
                    for f in glob.glob(os.path.join(d, "*.importtime")) + glob.glob(os.path.join(d, "*.prof")):
                        os.unlink(f)
                    try:
                        cid = f"prof{uuid.uuid4().hex[:10]}"
                        r = exec_plugin(cni_path, "calico", "ADD", conf, container_id=cid, netns=f"/var/run/netns/{ns}")
                        assert r.ok, r.stdout
                        found = sorted(glob.glob(os.path.join(d, "calico*.importtime"))
                                       + glob.glob(os.path.join(d, "calico*.prof")))
                        exec_plugin(cni_path, "calico", "DEL", conf, container_id=cid, netns=f"/var/run/netns/{ns}")
                    finally:
                        subprocess.run(["ip", "netns", "del", ns], check=False)
                for f in found:
                    name = os.path.basename(f).split(".")[0]
                    if mode == "importtime":
                        total, tops = _importtime_summary(f)
                        print(f"\n{name} ADD: imports {total:.0f} ms (-X importtime); heaviest top-level imports:")
                        for ms, mod in tops:
                            print(f"  {ms:7.1f}  {mod}")
                    else:
                        print(f"\n{name} ADD under cProfile (inflated by the profiler), ms:")
                        for label, ms in sorted(_prof_summary(f).items(), key=lambda kv: -kv[1]):
                            print(f"  {ms:7.1f}  {label}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="samples per series")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded rounds first")
    parser.add_argument("--bundle", help="frozen onedir bundle (default: packaging/build)")
    parser.add_argument("--onefile", nargs="?", const="build", help="add a onefile series (a dir, or build one)")
    parser.add_argument("--python", action="store_true", help="add the venv entry points as series")
    parser.add_argument("--profile", action="store_true", help="profile one ADD of the Python path too")
    args = parser.parse_args()
    if args.onefile == "build":
        args.onefile = build_bundle(onefile=True)
    run_bench(args)
    if args.profile:
        run_profile()


if __name__ == "__main__":
    main()
