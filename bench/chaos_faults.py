"""Chaos, repeated: the slow-datastore and kill -9 Felix/Typha/BIRD/confd
scenarios of tests/chaos at a larger size or several times. Run as root::

    .venv/bin/python bench/chaos_faults.py [--runs 3] [--delay-ms 300] [--slow-adds 8] [--partition 20]

Prints each scenario's table; exits non-zero when an invariant broke.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.chaos import kill_components, slow_datastore  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--delay-ms", type=int, default=300)
    p.add_argument("--slow-adds", type=int, default=8)
    p.add_argument("--partition", type=float, default=20.0, help="seconds the node is cut off from etcd")
    args = p.parse_args()
    ok = True
    for _ in range(args.runs):
        for report in (slow_datastore.run(args.delay_ms, args.slow_adds, args.partition), kill_components.run()):
            print(report.table(), flush=True)
            try:
                report.check()
            except AssertionError:
                ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
