"""Felix's two data planes side by side: nftables vs iptables (+ ipset).

    .venv/bin/python bench/felix_dataplanes_bench.py [-n 20] [--starts 2]

Same scene as ``bench/felix_bench.py`` (whose ``Bench`` is reused): 200
local endpoints of this node (2 real pods + 198 host-only veths), 1,000
policies. For each data plane, in the same run and on the same datastore:

1. full programming: ``--starts`` cold starts of Felix with nothing of ours
   in the kernel (no table, no cali- chains, no cali40 sets); reported: process
   start -> programmed (Felix's readiness), Felix's calc and apply times;
2. single-change latency: one policy selecting pod B gains (allow) / loses
   (deny) a rule for UDP from pod A, which floods every millisecond;
   latency = etcd write -> first (last) datagram arriving, p50 / p95.

Prints one table. Starts its own etcd; removes its namespaces, interfaces,
nft table, cali- chains and IP sets.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import felix_bench  # noqa: E402
from felix.dataplane.iptables import detect_backend, parse_save, save_text  # noqa: E402
from felix.dataplane.iptables_dataplane import remove_iptables_state  # noqa: E402
from tests.felix.harness import cali_ipsets, nft, nft_table_exists  # noqa: E402
from tests.support.etcd_server import EtcdServer  # noqa: E402

DATAPLANES = ("nftables", "iptables")  # iptables once per --iptables-backends entry


class DataplaneBench(felix_bench.Bench):
    def use(self, dataplane: str, backend: str = "Auto") -> None:
        env = self.cluster.felix.env
        env["FELIX_NFTABLESMODE"] = "Disabled" if dataplane == "iptables" else "Enabled"
        env["FELIX_IPTABLESREFRESHINTERVAL"] = "180"
        env["FELIX_IPTABLESBACKEND"] = backend
        self.dataplane = dataplane
        self.variant = detect_backend(backend)

    def wipe(self) -> None:
        c = self.cluster
        if nft_table_exists(c.table):
            nft("delete", "table", "inet", c.table)
        remove_iptables_state()

    def cold_start(self) -> dict[str, float]:
        c = self.cluster
        c.felix.stop()
        self.wipe()
        t0 = time.monotonic()
        c.felix.start()
        c.felix.wait_ready(timeout=600)
        ready = time.monotonic() - t0
        m = c.felix.metrics()
        stats: dict[str, Any] = {
            "ready_s": ready,
            "calc_s": m.get("felix_calc_graph_update_time_seconds_sum", 0.0),
            "apply_s": m.get("felix_int_dataplane_apply_time_seconds_sum", 0.0),
        }
        if self.dataplane == "nftables":
            listing = nft("list", "table", "inet", c.table)
            stats["objects"] = (f"{listing.count(chr(9) + 'chain ')} chains, "
                                f"{sum(1 for line in listing.splitlines() if 'comment ' in line)} rules, "
                                f"{listing.count(chr(9) + 'set ')} sets")
        else:
            saved = parse_save(save_text(self.variant, 4))
            chains = [ch for st in saved.values() for name, ch in st.chains.items() if name.startswith("cali-")]
            stats["objects"] = (f"{len(chains)} chains, {sum(len(ch) for ch in chains)} rules (v4), "
                                f"{len(cali_ipsets())} ipsets")
        stats["denied_ok"] = not self.probe_b()
        return stats

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            remove_iptables_state()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="policy changes per direction and data plane")
    parser.add_argument("--starts", type=int, default=2, help="cold starts per data plane")
    parser.add_argument("--iptables-backends", default="NFT,Legacy",
                        help="IptablesBackend values to measure (comma-separated)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, nftables, iptables)")
    rows: list[dict[str, Any]] = []
    with EtcdServer() as etcd:
        bench = DataplaneBench(etcd)
        try:
            t = time.monotonic()
            bench.populate()
            print(f"datastore populated: {felix_bench.N_ENDPOINTS} endpoints, {felix_bench.N_POLICIES} policies "
                  f"({time.monotonic() - t:.1f} s)", flush=True)
            plan = [("nftables", "Auto")] + [("iptables", b.strip()) for b in args.iptables_backends.split(",")]
            for dp, backend in plan:
                bench.use(dp, backend)
                starts = [bench.cold_start() for _ in range(args.starts)]
                allow, deny = bench.change_latency(args.n)
                m = bench.cluster.felix.metrics()
                count = m.get("felix_int_dataplane_apply_time_seconds_count", 0)
                row = {
                    "dataplane": dp if dp == "nftables" else f"iptables-{bench.variant}",
                    "ready": statistics.median(s["ready_s"] for s in starts),
                    "calc": statistics.median(s["calc_s"] for s in starts) * 1000,
                    "apply": statistics.median(s["apply_s"] for s in starts) * 1000,
                    "objects": starts[-1]["objects"],
                    "denied_ok": all(s["denied_ok"] for s in starts),
                    "allow": (felix_bench.pct(allow, 0.5), felix_bench.pct(allow, 0.95)),
                    "deny": (felix_bench.pct(deny, 0.5), felix_bench.pct(deny, 0.95)),
                    "apply_mean": m.get("felix_int_dataplane_apply_time_seconds_sum", 0) / max(count, 1) * 1000,
                }
                rows.append(row)
                print(f"{dp}: done ({row})", flush=True)
                bench.cluster.felix.stop()
        finally:
            bench.cleanup()
    print(f"\n{felix_bench.N_POLICIES} policies x {felix_bench.N_ENDPOINTS} endpoints; "
          f"{args.starts} cold starts and {args.n} allow + {args.n} deny changes per data plane")
    head = (f"{'data plane':<15} {'ready s':>8} {'calc ms':>8} {'apply ms':>9} "
            f"{'allow p50/p95 ms':>17} {'deny p50/p95 ms':>16} {'mean apply ms':>15}  programmed")
    print(head)
    print("(ready/calc/apply: median cold start; mean apply: all batches of the last Felix process,"
          " its cold start included)")
    print("-" * len(head))
    for r in rows:
        print(f"{r['dataplane']:<15} {r['ready']:>8.2f} {r['calc']:>8.0f} {r['apply']:>9.0f} "
              f"{r['allow'][0]:>8.1f}/{r['allow'][1]:<8.1f} {r['deny'][0]:>7.1f}/{r['deny'][1]:<8.1f} "
              f"{r['apply_mean']:>15.1f}  {r['objects']}{'' if r['denied_ok'] else ' (PROBE MISMATCH)'}")


if __name__ == "__main__":
    main()
