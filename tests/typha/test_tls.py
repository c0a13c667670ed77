"""Typha with mutual TLS: an allowed client cert syncs, others are refused."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.typha.support import Collector, TyphaProcess, etcd_state, wait_for, wep


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: str, name: str, cn: str, uri: str | None = None, ca: str = "ca") -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}", cwd=d)
    ext = f"{name}.ext"
    with open(os.path.join(d, ext), "w") as f:
        f.write(f"subjectAltName=URI:{uri}\n" if uri else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("typha-pki"))
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out",
                 f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}", cwd=d)
    _issue(d, "server", "typha-server")
    _issue(d, "felix", "typha-client")
    _issue(d, "felix-uri", "someone", uri="spiffe://cluster.local/ns/kube-system/sa/calico-node")
    _issue(d, "intruder", "intruder")
    _issue(d, "foreign", "typha-client", ca="otherca")
    return d


def test_tls_allowed_client_syncs_and_others_are_refused(etcd_backend, etcd_server, pki, unique):  # type: ignore[no-untyped-def]
    p = lambda n: os.path.join(pki, n)  # noqa: E731
    etcd_backend.apply(*wep(f"ns-{unique}", "pod-1"))
    typha = TyphaProcess(
        etcd_server.endpoint, TYPHA_CAFILE=p("ca.crt"), TYPHA_SERVERCERTFILE=p("server.crt"),
        TYPHA_SERVERKEYFILE=p("server.key"), TYPHA_CLIENTCN="typha-client",
        TYPHA_CLIENTURISAN="spiffe://cluster.local/ns/kube-system/sa/calico-node",
    ).start()

    def client(name: str, **kw: str) -> Collector:
        return Collector(typha.addr, name, ca_file=p("ca.crt"), cert_file=p(f"{name}.crt"),
                         key_file=p(f"{name}.key"), server_cn="typha-server", **kw).start()

    good = client("felix")
    good_uri = client("felix-uri")
    bad = [client("intruder"), client("foreign")]
    wrong_server = client("felix", server_uri_san="spiffe://nope")
    wrong_server.syncer._server_cn = "not-typha"
    try:
        expected = etcd_state(etcd_backend)
        wait_for(lambda: good.snapshot() == expected and good_uri.snapshot() == expected, 10)
        # Plain TCP to a TLS port gets nowhere.
        plain = Collector(typha.addr, "plain").start()
        time.sleep(1.5)
        for c in bad + [wrong_server, plain]:
            assert not c.syncer.in_sync and c.snapshot() == {}, c.syncer.node
        plain.stop()
        assert typha.metric('typha_connections_dropped{reason="tls"}') >= 1  # intruder: CA-signed, wrong CN
        assert typha.metric("typha_connections_active") == 2
        etcd_backend.apply(*wep(f"ns-{unique}", "pod-2"))
        expected = etcd_state(etcd_backend)
        wait_for(lambda: good.snapshot() == expected, 5)
    finally:
        for c in [good, good_uri, wrong_server] + bad:
            c.stop()
        typha.cleanup()
