"""calico-ipam entry point.

Only :mod:`cni.skel` (stdlib) is imported up front: VERSION never loads
pydantic or the datastore client; each verb imports what it needs.
"""
from __future__ import annotations

import sys
from typing import Any


def _handler(command: str):  # type: ignore[no-untyped-def]
    def run(args: Any) -> Any:
        from ipam.plugin import HANDLERS

        return HANDLERS[command](args)

    return run


def main() -> None:
    from cni.version import exit_if_version

    exit_if_version()
    from cni.shim import forward  # stdlib only: the node's CNI service, if up

    if sys.argv[1:] not in (["-v"], ["--version"]):
        status = forward("calico-ipam")
        if status is not None:
            sys.exit(status)
    from cni.skel import run

    if sys.argv[1:] in (["-v"], ["--version"]):
        print("pycalico calico-ipam 0.1.0")
        sys.exit(0)
    about = "Calico CNI IPAM plugin (pycalico)"
    sys.exit(run({c: _handler(c) for c in ("ADD", "DEL", "CHECK", "STATUS", "GC")}, about))


if __name__ == "__main__":
    main()
