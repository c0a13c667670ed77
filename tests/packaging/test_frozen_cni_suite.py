"""The frozen executables pass the same CNI suite as the Python entry points.

tests/cni picks the directory holding ``calico`` / ``calico-ipam`` from
``PYCALICO_CNI_BIN`` (tests/support/cni_exec.make_cni_path); this test runs
that suite once more in a subprocess with it pointing at the bundle. A
subprocess rather than a fixture parametrization: tests/cni's ``cni_path``
fixture is session-scoped and shared, and the second run gets its own etcd.
Set ``PYCALICO_SKIP_FROZEN_SUITE=1`` to skip it (it takes as long as
tests/cni itself, about a minute).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.cni_exec import REPO

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


@pytest.mark.skipif(os.environ.get("PYCALICO_SKIP_FROZEN_SUITE") == "1", reason="PYCALICO_SKIP_FROZEN_SUITE=1")
def test_cni_suite_against_frozen_bundle(bundle: str) -> None:
    env = {**os.environ, "PYCALICO_CNI_BIN": bundle}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/cni", "-q", "-p", "no:cacheprovider", "-rfE"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, f"tests/cni against {bundle}: {summary}\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary
