"""``calico`` executable: one bundle, dispatched on argv[0] as upstream ships it.

Only the stdlib is imported before the command is known, so VERSION is fast.
First the fast path: if the node's CNI service answers on its socket
(:mod:`cni.shim`), it runs the request and this process only prints the reply.
"""
from __future__ import annotations

import os
import sys


def main() -> None:
    from cni.version import exit_if_version

    exit_if_version()  # runtimes probe plugins with VERSION: answer it before anything else loads
    from cni.shim import forward

    plugin = "calico-ipam" if os.path.basename(sys.argv[0]) == "calico-ipam" else "calico"
    status = forward(plugin)
    if status is not None:
        sys.exit(status)
    if plugin == "calico-ipam":
        from ipam.main import main as ipam_main

        ipam_main()
        return
    from cni.skel import run

    handlers = _lazy_handlers()
    sys.exit(run(handlers, "calico"))


def _lazy_handlers():  # type: ignore[no-untyped-def]
    def handler(name: str):  # type: ignore[no-untyped-def]
        def call(args):  # type: ignore[no-untyped-def]
            from cni.plugin import HANDLERS

            return HANDLERS[name](args)

        return call

    return {name: handler(name) for name in ("ADD", "DEL", "CHECK", "STATUS", "GC")}


if __name__ == "__main__":
    main()
