"""Fixtures for the conformance-suite tests: the Go peers and a way to run the suite end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PYCALICO_CACHE", "/var/cache/pycalico"))
FAILING = ("FAIL", "ERROR")


@dataclass(frozen=True)
class GoPeers:
    cnitool: Path
    plugins: Path


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]

    @property
    def results(self) -> list[dict[str, Any]]:
        return list(self.report.get("results", []))

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] in statuses]

    def failed_rules(self) -> set[str]:
        return {r["rule"] for r in self.with_status(*FAILING)}


@pytest.fixture(scope="session")
def go_peers() -> GoPeers:
    """cnitool and the reference plugins, built from the Go module proxy (seconds when cached)."""
    proc = subprocess.run([str(REPO / "scripts" / "build-go-peers")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-go-peers failed:\n{proc.stdout}\n{proc.stderr}")
    peers = GoPeers(CACHE / "bin" / "cnitool", CACHE / "cni-plugins")
    assert os.access(peers.cnitool, os.X_OK)
    return peers


def suite_command(conf: Path, cni_path: list[Path], report: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "conformance",
        "--conf", str(conf),
        "--cni-path", ":".join(str(p) for p in cni_path),
        "--report-json", str(report),
        *extra,
    ]


def run_suite(cmd: list[str], report: Path, env: dict[str, str] | None = None, timeout: float = 240) -> SuiteRun:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else {}
    return SuiteRun(proc.returncode, proc.stdout, proc.stderr, data)


def run_calico_suite(go_peers: GoPeers, cni_path: str, etcd_endpoint: str, etcd_backend: Any, unique: str,
                     tmp_path: Path, netns_prefix: str, env: dict[str, str]) -> SuiteRun:
    """The whole suite (exec and cnitool drivers) against calico + calico-ipam
    on ``etcd_endpoint``, from a conflist written in ``tmp_path``."""
    from tests.support.pools import create_pool

    create_pool(etcd_backend, "cnf-pool", "10.124.0.0/16")
    plugin = {
        "type": "calico",
        "etcd_endpoints": etcd_endpoint,
        "nodename": f"cnf-node-{unique}",
        "log_file_path": str(tmp_path / "cni.log"),
        "ipam_lock_file": str(tmp_path / "ipam.lock"),
        "ipam": {"type": "calico-ipam"},
    }
    conf = {"cniVersion": "1.0.0", "name": f"cnf-calico-{unique}", "plugins": [plugin]}
    conf_path = tmp_path / "calico.conflist"
    conf_path.write_text(json.dumps(conf))
    report = tmp_path / "report.json"
    cmd = suite_command(conf_path, [Path(cni_path)], report, "--cnitool", str(go_peers.cnitool),
                        "--netns-prefix", f"{netns_prefix}{unique[:6]}")
    return run_suite(cmd, report, env=env, timeout=600)


@pytest.fixture
def host_netns(unique: str) -> Iterator[str]:
    """A throwaway namespace standing in for the host: plugins that touch the host side
    (bridge's bridge, ptp's host veth and addresses) do it in here, not in the real host."""
    name = f"cnf-host-{unique}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
