"""A private etcd that speaks only TLS with client certificates, and its PKI."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.etcd_server import EtcdServer
from tests.tls.pki import PKI, make_pki


@pytest.fixture(scope="package")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="package")
def tls_etcd(pki: PKI) -> Iterator[EtcdServer]:
    """etcd with --client-cert-auth: only clients with a certificate from ``pki.ca`` get in."""
    with EtcdServer(tls=pki.etcd_tls) as server:
        yield server


@pytest.fixture
def tls_backend(tls_etcd: EtcdServer, pki: PKI):  # type: ignore[no-untyped-def]
    from datastore.etcd import EtcdBackend

    backend = EtcdBackend(tls_etcd.endpoint, ca_cert_file=pki.ca, cert_file=pki.client_cert,
                          key_file=pki.client_key)
    yield backend
    backend.close()
