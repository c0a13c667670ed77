"""Run one fuzz target under atheris (libFuzzer).

    python -m tests.fuzz.run TARGET [libFuzzer flags] WORK_CORPUS_DIR SEED_CORPUS_DIR

libFuzzer writes new interesting inputs into the first corpus directory only,
so pass a scratch directory first and the checked-in seeds
(``tests/fuzz/corpus/TARGET``) second. A crash prints the traceback, writes the
input to ``-artifact_prefix`` and exits non-zero.
"""
from __future__ import annotations

import importlib
import sys


def main() -> None:
    import atheris

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name = sys.argv.pop(1)
    with atheris.instrument_imports(include=["cni", "datastore", "calicoctl", "typha"]):
        from tests.fuzz import targets

        for module in targets.INSTRUMENTED:
            importlib.import_module(module)
    target = targets.TARGETS[name]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
