"""calico-ipam entry point (placeholder until the IPAM issue lands)."""
from __future__ import annotations

import sys


def main() -> None:
    from cni.errors import CNIError
    from cni.skel import run

    def not_implemented(args):  # type: ignore[no-untyped-def]
        raise CNIError(2, "calico-ipam is not implemented yet")

    sys.exit(run({c: not_implemented for c in ("ADD", "DEL", "CHECK", "STATUS", "GC")}, "calico-ipam"))
