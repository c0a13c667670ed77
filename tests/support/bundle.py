"""The frozen (PyInstaller) bundle for tests: built once by packaging/build,
cached by source hash; ``PYCALICO_BUNDLE=<dir>`` uses a given bundle."""
from __future__ import annotations

import os
import subprocess

from tests.support.cni_exec import REPO


def build_bundle() -> str:
    """Return the bundle directory (holding calico, calico-ipam, ...)."""
    given = os.environ.get("PYCALICO_BUNDLE")
    if given:
        return os.path.realpath(given)
    proc = subprocess.run([os.path.join(REPO, "packaging", "build")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"packaging/build failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]
