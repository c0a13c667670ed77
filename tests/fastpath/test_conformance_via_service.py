"""The conformance suite (exec and cnitool drivers, every version) against
calico + calico-ipam with the node's CNI service up: every plugin exec goes
through the fast path. tests/conformance/test_calico.py covers the service down."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance.conftest import GoPeers, go_peers, run_calico_suite  # noqa: F401 - fixture

pytestmark = [pytest.mark.netns, pytest.mark.etcd]


def test_calico_passes_conformance_via_service(go_peers: GoPeers, cni_path: str, cni_service, etcd_server,  # type: ignore[no-untyped-def]  # noqa: F811
                                               etcd_backend, unique: str, tmp_path: Path) -> None:
    served = cni_service.served()
    run = run_calico_suite(go_peers, cni_path, etcd_server.endpoint, etcd_backend, unique, tmp_path, "cnfs",
                           env={**os.environ, **cni_service.env})
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert not run.with_status("FAIL", "ERROR", "xfail"), run.stdout
    # Each DEL rule checks its own attachment is gone (and re-ADDs to prove the
    # address was released); no global cali* check: other jobs may share the host.
    # The suite's ADD/DEL/CHECK/STATUS/GC execs went to the service.
    assert cni_service.served() - served >= 20, cni_service.served() - served
