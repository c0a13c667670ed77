"""Fixtures for the packaging tests: the frozen bundle and installs of it.

The bundle is built once by ``packaging/build`` (cached by source hash in
``$PYCALICO_CACHE/dist``; a rerun with unchanged sources takes well under a
second). ``PYCALICO_BUNDLE=<dir>`` uses a given bundle instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.support.cni_exec import CACHE, REFERENCE_PLUGINS, REPO

PACKAGING = os.path.join(REPO, "packaging")
if PACKAGING not in sys.path:
    # calico_install is imported by its own name (``packaging`` is PyPI's).
    sys.path.append(PACKAGING)

CNITOOL = os.path.join(CACHE, "bin", "cnitool")


@pytest.fixture(scope="session")
def bundle() -> str:
    from tests.support.bundle import build_bundle

    try:
        return build_bundle()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@dataclass
class Install:
    bin_dir: str
    conf_dir: str
    log_file: str
    proc: subprocess.CompletedProcess[str]

    @property
    def conflist_path(self) -> str:
        return os.path.join(self.conf_dir, "10-calico.conflist")

    @property
    def conflist(self) -> dict[str, Any]:
        with open(self.conflist_path) as f:
            return json.load(f)  # type: ignore[no-any-return]


def run_frozen_install(bundle: str, bin_dir: str, conf_dir: str, *args: str,
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The bundle's ``install`` link, with an empty environment (no venv)."""
    return subprocess.run([os.path.join(bundle, "install"), "--bin-dir", bin_dir, "--conf-dir", conf_dir, *args],
                          env=env or {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def frozen_install(bundle, etcd_server, tmp_path) -> Iterator[Install]:  # type: ignore[no-untyped-def]
    """The frozen bundle installed by its own installer into temp dirs, with
    the reference plugins (portmap, ...) and an etcd datastore."""
    bin_dir, conf_dir = str(tmp_path / "opt-cni-bin"), str(tmp_path / "etc-cni-net.d")
    log_file = str(tmp_path / "cni.log")
    extra = {"ipam_lock_file": str(tmp_path / "ipam.lock")}
    proc = run_frozen_install(
        bundle, bin_dir, conf_dir,
        "--plugins-dir", REFERENCE_PLUGINS, "--etcd-endpoints", etcd_server.endpoint,
        "--nodename", f"pkg-node-{os.urandom(3).hex()}", "--log-level", "debug", "--log-file-path", log_file,
        "--extra-config", json.dumps(extra),
    )
    assert proc.returncode == 0, proc.stderr
    yield Install(bin_dir, conf_dir, log_file, proc)
