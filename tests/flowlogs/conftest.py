"""A Felix with flow logs and the flow viewer on, 2 namespaces x 2 pods made by
the CNI plugin (the Felix truth-table harness)."""
from __future__ import annotations

import os
import random
from typing import Iterator

import pytest

from tests.felix.harness import Cluster
from tests.support.etcd_server import free_port, wipe_calico


@pytest.fixture(scope="package")
def flow_cluster(etcd_server, cni_path) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, NFLOG)")
    from datastore.etcd import EtcdBackend

    backend = EtcdBackend(etcd_server.endpoint)
    wipe_calico(backend)
    c = Cluster(backend, etcd_server.endpoint, cni_path, namespaces=("x", "y"), pods=("a", "b"))
    c.flowlog_dir = os.path.join(c.workdir, "flowlogs")  # type: ignore[attr-defined]
    c.viewer_port = free_port()  # type: ignore[attr-defined]
    c.felix.env.update({
        "FELIX_FLOWLOGSFILEENABLED": "true",
        "FELIX_FLOWLOGSFILEDIRECTORY": c.flowlog_dir,  # type: ignore[attr-defined]
        "FELIX_FLOWLOGSFLUSHINTERVAL": "0.5",
        "FELIX_FLOWLOGSFILEINCLUDEPOLICIES": "true",
        "FELIX_FLOWLOGSFILEINCLUDELABELS": "true",
        "FELIX_FLOWLOGSNFLOGGROUP": str(random.randint(1000, 60000)),
        "FELIX_FLOWVIEWERENABLED": "true",
        "FELIX_FLOWVIEWERPORT": str(c.viewer_port),  # type: ignore[attr-defined]
    })
    try:
        c.setup()
        yield c
    finally:
        c.teardown()
        wipe_calico(backend)
        backend.close()
