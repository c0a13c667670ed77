"""Exec latency of the frozen calico / calico-ipam against the Go reference
plugins, exec'd the same way, in the same run.

    .venv/bin/python bench/exec_latency.py [-n 50] [--bundle DIR] [--onefile DIR] [--python] [--profile]

Series (rounds are interleaved: sample i of every series is taken before
sample i+1 of any, so machine noise hits all series alike):

  VERSION   /bin/true (exec floor), host-local (Go), calico and calico-ipam
            frozen onedir [, frozen onefile] [, venv entry point]
  ADD/DEL   bridge + host-local (Go) vs calico + calico-ipam frozen with etcd
            [, venv entry points]

Prints a table of p50/p95 wall time with ratios to the Go reference and the
issue's targets (VERSION p50 < 50 ms, ADD p50 < 150 ms), and the p50 CPU time
(user + sys of the exec'd process tree, from getrusage): on a loaded machine
wall time mostly measures the run queue, CPU time what the plugin costs.
``--profile`` also runs ADDs of the frozen bundle under cProfile
(``PYCALICO_PROFILE``, packaging/bundle_entry.py) and prints where the time
goes: imports (heaviest modules), the phases of ADD, waits.

Uses bench/cni_latency.py's helpers (pct, timed, exec via tests/support).
Starts its own etcd; creates and removes its own namespaces and bridge.
"""
from __future__ import annotations

import argparse
import glob
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from cni_latency import pct  # noqa: E402
from tests.support.cni_exec import VENV_BIN, exec_plugin, make_cni_path  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402

VERSION_CONF = {"cniVersion": "1.0.0"}
TARGETS = {"VERSION": 50.0, "ADD": 150.0}


def build_bundle(onefile: bool = False) -> str:
    cmd = [os.path.join(REPO, "packaging", "build")] + (["--onefile"] if onefile else [])
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


Sample = tuple[float, float]  # (wall ms, CPU ms of the children)


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def timed(fn: Callable[[], Any]) -> Sample:
    """Wall and CPU time of ``fn``, which execs one process and waits for it."""
    cpu, start = _children_cpu_ms(), time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000, _children_cpu_ms() - cpu


class Series:
    def __init__(self, op: str, label: str, sample: Callable[[], Sample], reference: bool = False) -> None:
        self.op, self.label, self.sample, self.reference = op, label, sample, reference
        self.samples: list[float] = []
        self.cpu: list[float] = []

    def record(self) -> None:
        wall, cpu = self.sample()
        self.samples.append(wall)
        self.cpu.append(cpu)


def version_sample(cni_path: str, plugin: str) -> Callable[[], Sample]:
    def run() -> Sample:
        holder: dict[str, Any] = {}
        ms = timed(lambda: holder.update(r=exec_plugin(cni_path, plugin, "VERSION", VERSION_CONF)))
        if not holder["r"].ok:
            raise SystemExit(f"{plugin} VERSION failed: {holder['r'].stdout} {holder['r'].stderr[-300:]}")
        return ms
    return run


def exec_floor() -> Sample:
    return timed(lambda: subprocess.run(["/bin/true"], capture_output=True))


class AddDel:
    """One ADD then one DEL in a fresh netns per round; two Series share it."""

    def __init__(self, cni_path: str, plugin: str, conf: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.cni_path, self.plugin, self.conf, self.env = cni_path, plugin, conf, env
        self.pending_del: Sample | None = None

    def add(self) -> Sample:
        ns = f"bel-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        path, cid = f"/var/run/netns/{ns}", f"bench{uuid.uuid4().hex[:12]}"
        try:
            holder: dict[str, Any] = {}
            add_ms = timed(lambda: holder.update(r=exec_plugin(self.cni_path, self.plugin, "ADD", self.conf,
                                                               container_id=cid, netns=path, extra_env=self.env)))
            if not holder["r"].ok:
                raise SystemExit(f"{self.plugin} ADD failed: {holder['r'].stdout} {holder['r'].stderr[-400:]}")
            self.pending_del = timed(lambda: holder.update(r=exec_plugin(self.cni_path, self.plugin, "DEL", self.conf,
                                                                         container_id=cid, netns=path,
                                                                         extra_env=self.env)))
            if not holder["r"].ok:
                raise SystemExit(f"{self.plugin} DEL failed: {holder['r'].stdout}")
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        return add_ms

    def delete(self) -> Sample:
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
            if args.ipam_exec:
                pairs.append(("calico, calico-ipam exec'd (frozen)",
                              AddDel(frozen_path, "calico", calico_conf, {"PYCALICO_IPAM_EXEC": "1"}), False))
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
                    s.record()
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(series, args.n)


def print_table(series: list[Series], n: int) -> None:
    ref = {s.op: s for s in series if s.reference}
    print(f"\nExec latency, n={n} per series (interleaved rounds), ms; load average at end {loadavg()}")
    header = (f"{'op':8} {'series':38} {'p50':>8} {'p95':>8} {'mean':>8} {'p50/ref':>8} {'p95/ref':>8}"
              f" {'cpu p50':>8} {'cpu/ref':>8}")
    print(header)
    print("-" * len(header))
    for s in series:
        p50, p95, c50 = pct(s.samples, 0.5), pct(s.samples, 0.95), pct(s.cpu, 0.5)
        r = ref.get(s.op)
        if r is None or s.label.startswith("/bin/true"):
            r50 = r95 = rc = ""
        else:
            r50, r95 = f"{p50 / pct(r.samples, 0.5):.1f}", f"{p95 / pct(r.samples, 0.95):.1f}"
            rc = f"{c50 / max(pct(r.cpu, 0.5), 0.1):.1f}"
        print(f"{s.op:8} {s.label:38} {p50:8.1f} {p95:8.1f} {statistics.mean(s.samples):8.1f} {r50:>8} {r95:>8}"
              f" {c50:8.1f} {rc:>8}")
    print()
    for s in series:
        target = TARGETS.get(s.op)
        if target and s.label.startswith("calico") and "frozen" in s.label:
            p50 = pct(s.samples, 0.5)
            print(f"target {s.op} p50 < {target:.0f} ms: {s.label}: {p50:.0f} ms, "
                  f"{'meets it' if p50 < target else 'MISSES it'} (CPU p50 {pct(s.cpu, 0.5):.0f} ms)")


# -- profile ---------------------------------------------------------------------


PHASES = {  # label: (file suffix, function)
    "calico ADD handler (cni.plugin.cmd_add)": ("cni/plugin.py", "cmd_add"),
    "  calico-ipam in-process (run_calico_ipam)": ("cni/ipam_exec.py", "run_calico_ipam"),
    "    IPAM ADD handler (ipam.plugin.cmd_add)": ("ipam/plugin.py", "cmd_add"),
    "    host IPAM lock held/waited (HostLock.__enter__)": ("ipam/lock.py", "__enter__"),
    "  data plane (dataplane.setup)": ("cni/dataplane.py", "setup"),
    "    pod netns part (run_in_netns)": ("cni/netns.py", "run_in_netns"),
    "    netlink round trips (Netlink.request)": ("cni/netlink.py", "request"),
    "  netconf parsing (parse_netconf)": ("cni/netconf.py", "parse_netconf"),
    "  IPAM call, in-process or exec'd (exec_ipam)": ("cni/ipam_exec.py", "exec_ipam"),
}


def _profile_summary(path: str) -> tuple[dict[str, float], list[tuple[float, str]], list[tuple[float, str]]]:
    """(phase ms, heaviest module imports, heaviest datastore calls) of one
    frozen run's cProfile dump."""
    stats = pstats.Stats(path)
    phases: dict[str, float] = {}
    modules: list[tuple[float, str]] = []
    datastore: list[tuple[float, str]] = []
    total = 0.0
    for (file, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        ms = cum * 1000
        if func == "_find_and_load" and "importlib._bootstrap" in file:
            phases["imports (all, _find_and_load)"] = ms
        if file.endswith("cni/main.py") and func == "main":
            total = max(total, ms)
        if func == "<module>":
            modules.append((ms, _short(file)))
        elif _short(file).startswith("datastore/") and func not in ("<lambda>",) and not func.startswith("__"):
            datastore.append((ms, f"{_short(file)}:{func}"))
        for label, (suffix, name) in PHASES.items():
            if file.endswith(suffix) and func == name:
                phases[label] = max(phases.get(label, 0.0), ms)
    phases["total (cni.main.main)"] = total
    phases["total minus imports"] = total - phases.get("imports (all, _find_and_load)", 0.0)
    return phases, sorted(modules, reverse=True), sorted(datastore, reverse=True)


def _short(file: str) -> str:
    marker = "/_internal/"
    file = file.split(marker, 1)[1] if marker in file else file
    return file[len(REPO) + 1:] if file.startswith(REPO + "/") else file


def run_profile(bundle: str, rounds: int, ipam_exec: bool) -> None:
    """ADDs of the frozen bundle under cProfile; medians over ``rounds``."""
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
            cni_path = make_cni_path(os.path.join(tmp, "bin"), bundle)
            profiles = os.path.join(tmp, "prof")
            os.makedirs(profiles)
            env = {"PYCALICO_PROFILE": profiles, **({"PYCALICO_IPAM_EXEC": "1"} if ipam_exec else {})}
            walls = []
            for round_ in range(rounds + 1):  # the first is a warm-up (page cache)
                ns = f"bpr-{uuid.uuid4().hex[:8]}"
                subprocess.run(["ip", "netns", "add", ns], check=True)
                try:
                    cid = f"prof{uuid.uuid4().hex[:10]}"
                    for f in glob.glob(os.path.join(profiles, "*")):
                        os.unlink(f)
                    holder: dict[str, Any] = {}
                    wall, _ = timed(lambda: holder.update(r=exec_plugin(
                        cni_path, "calico", "ADD", conf, container_id=cid, netns=f"/var/run/netns/{ns}",
                        extra_env=env)))
                    assert holder["r"].ok, holder["r"].stdout + holder["r"].stderr
                    if round_:
                        walls.append(wall)
                        for f in glob.glob(os.path.join(profiles, "*.prof")):
                            os.rename(f, os.path.join(tmp, f"round{round_}.{os.path.basename(f)}"))
                    exec_plugin(cni_path, "calico", "DEL", conf, container_id=cid, netns=f"/var/run/netns/{ns}")
                finally:
                    subprocess.run(["ip", "netns", "del", ns], check=False)
        runs = [_profile_summary(f) for f in sorted(glob.glob(os.path.join(tmp, "round*.calico.*.prof")))]
        print(f"\nProfile of a frozen ADD{' (calico-ipam exec-ed)' if ipam_exec else ''}: median of {len(runs)} runs "
              f"under cProfile (inflates call-heavy code), ms; wall of the profiled exec p50 "
              f"{pct(walls, 0.5):.0f} ms; load average {loadavg()}")
        labels = ["total (cni.main.main)", "imports (all, _find_and_load)", "total minus imports", *PHASES]
        for label in labels:
            values = [r[0][label] for r in runs if label in r[0]]
            if values:
                print(f"  {statistics.median(values):7.1f}  {label}")
        print("  heaviest imports (cumulative, nested like -X importtime; first run):")
        for ms, name in runs[0][1][:14]:
            print(f"  {ms:7.1f}    {name}")
        print("  heaviest datastore calls (cumulative; first run):")
        for ms, name in runs[0][2][:6]:
            print(f"  {ms:7.1f}    {name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="samples per series")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded rounds first")
    parser.add_argument("--bundle", help="frozen onedir bundle (default: packaging/build)")
    parser.add_argument("--onefile", nargs="?", const="build", help="add a onefile series (a dir, or build one)")
    parser.add_argument("--python", action="store_true", help="add the venv entry points as series")
    parser.add_argument("--ipam-exec", action="store_true",
                        help="add a series with calico-ipam exec'd (PYCALICO_IPAM_EXEC=1) instead of in-process")
    parser.add_argument("--profile", type=int, nargs="?", const=5, default=0, metavar="ROUNDS",
                        help="profile ROUNDS frozen ADDs (default 5) and say where the time goes")
    parser.add_argument("--profile-only", action="store_true", help="skip the latency table")
    args = parser.parse_args()
    if args.onefile == "build":
        args.onefile = build_bundle(onefile=True)
    if not args.bundle:
        args.bundle = build_bundle()
    if not args.profile_only:
        run_bench(args)
    if args.profile:
        run_profile(args.bundle, args.profile, ipam_exec=False)
        if args.ipam_exec:
            run_profile(args.bundle, args.profile, ipam_exec=True)


if __name__ == "__main__":
    main()
