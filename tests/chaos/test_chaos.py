"""Chaos scenarios at CI size (bigger runs: bench/chaos_*.py). Each prints its table."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def test_kill_etcd_during_concurrent_adds() -> None:
    from tests.chaos import etcd_kill

    report = etcd_kill.run(adds=24, nodes=4, workers=8)
    print("\n" + report.table())
    report.check()
    assert report.succeeded > 0


def test_slow_datastore() -> None:
    from tests.chaos import slow_datastore

    report = slow_datastore.run(delay_ms=300, slow_adds=3, partition_s=8)
    print("\n" + report.table())
    report.check()
    assert report.succeeded >= 1


def test_kill_felix_typha_bird_confd_in_turn() -> None:
    from tests.chaos import kill_components

    report = kill_components.run()
    print("\n" + report.table())
    report.check()


def test_kill_kube_apiserver_during_concurrent_adds() -> None:
    from tests.support import kube_apiserver

    if not kube_apiserver.available():
        pytest.skip("kube-apiserver missing: run scripts/build-kube-apiserver")
    from tests.chaos import kdd_kill

    report = kdd_kill.run(adds=16, nodes=2, workers=6)
    print("\n" + report.table())
    report.check()
    assert report.succeeded > 0
