"""Fixtures for the CNI fast path: the node's CNI service on a private socket."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import pytest

from tests.cni.conftest import netconf, node  # noqa: F401 - shared fixtures
from tests.support.cni_exec import REPO, PluginResult, exec_plugin

PYTHON = os.path.join(REPO, ".venv", "bin", "python")


class ServiceProcess:
    def __init__(self) -> None:
        # Short path: unix socket names are limited to 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="pcf-", dir="/tmp")
        self.socket = os.path.join(self.dir, "cni.sock")
        self.log = os.path.join(self.dir, "service.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> "ServiceProcess":
        if os.path.exists(self.socket):  # left by a killed service
            os.unlink(self.socket)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "cni.service", "--socket", self.socket, "--log-level", "debug",
             "--log-file", self.log],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"CNI service did not start: {err[-2000:]}")
            time.sleep(0.02)
        return self

    @property
    def env(self) -> dict[str, str]:
        return {"PYCALICO_CNI_SOCKET": self.socket}

    def served(self) -> int:
        from cni.service import stats

        return int(stats(self.socket)["served"])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def cni_service() -> Iterator[ServiceProcess]:
    service = ServiceProcess().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def own_service() -> Iterator[ServiceProcess]:
    """A service of the test's own (for tests that kill it)."""
    service = ServiceProcess()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def calico(cni_path: str, cni_service: ServiceProcess):  # type: ignore[no-untyped-def]
    """Like tests/cni's ``calico``, but every call must go through the service."""

    def call(command: str, conf: Any, **kw: Any) -> PluginResult:
        extra = {**cni_service.env, **(kw.pop("extra_env", None) or {})}
        before = cni_service.served()
        res = exec_plugin(cni_path, "calico", command, conf, extra_env=extra, **kw)
        if command != "VERSION":
            assert cni_service.served() > before, "the request did not go through the CNI service"
        return res

    return call


@pytest.fixture
def standalone(cni_path: str):  # type: ignore[no-untyped-def]
    def call(command: str, conf: Any, **kw: Any) -> PluginResult:
        extra = {"PYCALICO_CNI_SOCKET": "none", **(kw.pop("extra_env", None) or {})}
        return exec_plugin(cni_path, "calico", command, conf, extra_env=extra, **kw)

    return call


__all__ = ["sys"]


@pytest.fixture
def datastore(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """The fast-path suites run on etcd (this overrides the etcd/kubernetes
    parametrization of tests/cni's fixtures); the Kubernetes datastore through
    the service is covered by one ADD/DEL test of its own (test_fastpath.py)."""
    from tests.kubernetes.fixtures import make_datastore

    ds = make_datastore("etcd", request, str(tmp_path))
    try:
        yield ds
    finally:
        ds.cleanup()
