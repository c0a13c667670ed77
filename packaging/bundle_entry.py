"""Entry point of the frozen pycalico bundle: one executable, many names.

The bundle holds one executable (``calico``); ``calico-ipam``, ``calicoctl``,
``install`` and the node agent's ``calico-felix``, ``calico-confd`` and
``calico-typha`` are symlinks to it (upstream ships calico + calico-ipam +
install as one binary in its CNI image). The name it was exec'd under
(argv[0]) picks the program. Only ``os`` and ``sys``
are imported before that choice, so ``CNI_COMMAND=VERSION`` stays cheap.

``PYCALICO_IMPORT_TRACE=<dir>`` writes the names of all modules a run
imported to ``<dir>/<program>.<pid>.modules`` at exit (the tests use it to
keep heavy imports off the hot paths; nothing is registered when unset).
``PYCALICO_PROFILE=<dir>`` runs the program under cProfile and writes
``<dir>/<program>.<pid>.prof`` at exit (bench/exec_latency.py --profile reads
it: where a frozen ADD spends its time, imports included).
"""
from __future__ import annotations

import os
import sys

INSTALL_NAMES = ("install", "calico-install", "install-cni")


def _trace_imports(directory: str, program: str) -> None:
    import atexit

    def dump() -> None:
        path = os.path.join(directory, f"{program}.{os.getpid()}.modules")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(sys.modules)) + "\n")

    atexit.register(dump)


def _profile(directory: str, program: str) -> None:
    import atexit
    import cProfile

    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(os.path.join(directory, f"{program}.{os.getpid()}.prof"))

    atexit.register(dump)
    profiler.enable()


def main() -> None:
    name = os.path.basename(sys.argv[0])
    trace = os.environ.get("PYCALICO_IMPORT_TRACE")
    if trace:
        _trace_imports(trace, name)
    profile = os.environ.get("PYCALICO_PROFILE")
    if profile:
        _profile(profile, name)
    if name == "calicoctl":
        from calicoctl.main import main as run
    elif name in INSTALL_NAMES:
        from calico_install.main import main as run
    elif name == "calico-felix":
        from felix.main import main as run
    elif name == "calico-confd":
        from bird.main import main as run
    elif name == "calico-typha":
        from typha.main import main as run
    else:  # calico, calico-ipam (cni.main dispatches between the two)
        from cni.main import main as run
    run()


if __name__ == "__main__":
    main()
