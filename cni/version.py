"""CNI VERSION, answered before anything else is imported.

Runtimes exec every plugin with ``CNI_COMMAND=VERSION`` to learn what it
speaks, so this path imports :mod:`json` only (no dataclasses, typing or
logging, which :mod:`cni.skel` needs for the other commands). Shared by
``calico`` and ``calico-ipam``; :mod:`cni.skel` re-exports these names.
"""
from __future__ import annotations

import json

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
LATEST_VERSION = "1.1.0"


def version_result(stdin: bytes) -> dict[str, object]:
    """The VERSION answer: the config's cniVersion (if any) echoed, and every version we speak."""
    version = LATEST_VERSION
    try:
        conf = json.loads(stdin) if stdin.strip() else {}
        if isinstance(conf, dict) and isinstance(conf.get("cniVersion"), str):
            version = conf["cniVersion"]
    except ValueError:
        pass
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def answer(stdin: bytes) -> str:
    """Exactly what :func:`cni.skel.dispatch` prints for VERSION."""
    return json.dumps(version_result(stdin)) + "\n"


def exit_if_version(environ: "dict[str, str] | None" = None) -> None:
    """For the executables' entry points: answer VERSION and exit, else return."""
    import os
    import sys

    if (os.environ if environ is None else environ).get("CNI_COMMAND") != "VERSION":
        return
    sys.stdout.write(answer(sys.stdin.buffer.read()))
    sys.stdout.flush()
    sys.exit(0)
