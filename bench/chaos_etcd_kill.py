"""Chaos at full size: kill -9 etcd during 100 concurrent ADDs on 4 simulated
nodes (tests/chaos/etcd_kill.py; CI runs a smaller version), or with
``--datastore kubernetes`` kill -9 the kube-apiserver instead
(tests/chaos/kdd_kill.py). Run as root::

    .venv/bin/python bench/chaos_etcd_kill.py [--datastore etcd|kubernetes] [--adds 100] [--nodes 4]
        [--workers 16] [--down 5] [--runs 1]

Prints the scenario table per run; exits non-zero when an invariant broke
(a bad failure, a duplicate address, a leak after GC).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.chaos import etcd_kill, kdd_kill  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datastore", choices=("etcd", "kubernetes"), default="etcd")
    p.add_argument("--adds", type=int, default=100)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--down", type=float, default=5.0, help="seconds etcd stays dead")
    p.add_argument("--kill-after", type=float, default=0.25, help="fraction of ADDs finished before the kill")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    ok = True
    for _ in range(args.runs):
        scenario = etcd_kill if args.datastore == "etcd" else kdd_kill
        report = scenario.run(args.adds, args.nodes, args.workers, args.kill_after, args.down)
        print(report.table(), flush=True)
        try:
            report.check()
        except AssertionError:
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
