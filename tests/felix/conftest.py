"""Fixtures for the Felix tests: one Felix and nine pods shared by the package."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.felix.harness import Cluster
from tests.support.etcd_server import wipe_calico



@pytest.fixture(scope="package")
def cluster(etcd_server, cni_path) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    """Felix on a unique node and table, 3 namespaces x 3 pods made by the CNI plugin."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    from datastore.etcd import EtcdBackend

    backend = EtcdBackend(etcd_server.endpoint)
    wipe_calico(backend)
    c = Cluster(backend, etcd_server.endpoint, cni_path)
    try:
        c.setup()
        yield c
    finally:
        c.teardown()
        wipe_calico(backend)
        backend.close()
