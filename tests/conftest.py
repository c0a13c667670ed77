"""Shared pytest fixtures: real servers, started per test session."""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from tests.support.etcd_server import EtcdServer, wipe_calico

# kube_apiserver, kube_backend and the datastore/backend fixtures
# parametrized over etcd and the Kubernetes API (tests/kubernetes/fixtures.py).
pytest_plugins = ["tests.kubernetes.fixtures"]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd for the whole session (tests isolate by key prefix/cleanup)."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def private_etcd() -> Iterator[EtcdServer]:
    """A real etcd of the test's own, for tests that kill or restart it."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_backend(etcd_server: EtcdServer):  # type: ignore[no-untyped-def]
    from datastore.etcd import EtcdBackend

    backend = EtcdBackend(etcd_server.endpoint)
    wipe_calico(backend)
    yield backend
    wipe_calico(backend)
    backend.close()



@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def cni_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CNI_PATH with our plugins and the reference plugins (see build-go-peers)."""
    from tests.support.cni_exec import make_cni_path

    return make_cni_path(str(tmp_path_factory.mktemp("cni-bin")))
