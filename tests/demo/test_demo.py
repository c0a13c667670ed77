"""The README's first command runs scripts/demo.py: keep it working.

Runs the demo as a user would (after setup, which the test command has done):
one node with two pods, then two simulated nodes with confd + BIRD whose pods
ping each other over BGP-learned routes. It must succeed and leave nothing
behind (no cali* links, no namespaces or temporary directory of its own).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.cni_exec import REPO

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _demo_dirs() -> set[str]:
    import glob
    import tempfile

    return set(glob.glob(os.path.join(tempfile.gettempdir(), "pycalico-demo-*")))


@pytest.mark.timeout(600)
def test_demo_runs_and_cleans_up() -> None:
    links, namespaces, dirs = _links(), _netns(), _demo_dirs()
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "demo.py")], capture_output=True,
                          text=True, timeout=540, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "==>" in proc.stdout
    assert {link for link in _links() - links if link.startswith("cali")} == set()
    assert {ns for ns in _netns() - namespaces if ns.startswith(("demo", "pcn"))} == set()
    assert _demo_dirs() - dirs == set()
