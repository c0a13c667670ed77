"""Typha's bgp syncer type carries what confd renders BIRD's config from.

confd's own state (bird.state.BGPState) fed from the datastore directly and fed
through a real Typha (``syncer_type="bgp"``, the same ``FELIX_TYPHA*`` settings
as calico-node) renders the same bird.cfg, before and after changes; other
nodes' block affinities never reach the Typha-fed confd.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from bird.render import render
from bird.state import WATCHED_KINDS, BGPState, watch_options
from datastore.keys import BlockAffinityKey, ResourceKey
from datastore.syncer import SyncStatus, Syncer, Update
from tests.typha.support import TyphaProcess, wait_for
from typha.main import BGP_KINDS

pytestmark = pytest.mark.etcd

NODE = "bgp-node-1"


def res(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec}


class ConfdState:
    def __init__(self) -> None:
        self.state = BGPState()
        self.keys: set[Any] = set()
        self.in_sync = False
        self.lock = threading.Lock()

    def on_updates(self, updates: list[Update]) -> None:
        with self.lock:
            self.state.apply_all(updates)
            for u in updates:
                (self.keys.discard if u.value is None else self.keys.add)(u.key)

    def on_status(self, status: SyncStatus) -> None:
        self.in_sync = status == SyncStatus.IN_SYNC

    def render(self) -> str:
        with self.lock:
            return render(self.state, NODE)


def test_bgp_kinds_match_confd() -> None:
    assert set(BGP_KINDS) == set(WATCHED_KINDS) | {"BlockAffinity"}


def test_confd_state_through_typha_matches_direct(etcd_backend, etcd_server, tmp_path,  # type: ignore[no-untyped-def]
                                                   monkeypatch) -> None:
    from felix.typha import make_syncer

    b = etcd_backend
    for i, ip in ((1, "172.31.7.1/24"), (2, "172.31.7.2/24")):
        name = f"bgp-node-{i}"
        b.apply(ResourceKey("Node", name), res("Node", name, {"bgp": {"ipv4Address": ip}}))
        b.apply(BlockAffinityKey(name, f"10.77.{i}.0/26"), {"state": "confirmed", "deleted": False})
    b.apply(ResourceKey("BGPConfiguration", "default"), res("BGPConfiguration", "default", {"asNumber": 65010}))
    b.apply(ResourceKey("IPPool", "bgp-pool"), res("IPPool", "bgp-pool", {"cidr": "10.77.0.0/16"}))
    typha = TyphaProcess(etcd_server.endpoint).start()
    direct, via = ConfdState(), ConfdState()
    syncers = []
    try:
        syncers.append(Syncer(b, watch_options(NODE), direct.on_updates, direct.on_status).start())
        env = {"FELIX_TYPHAADDR": typha.addr, "FELIX_CONFIGFILE": "/nonexistent/felix.cfg"}
        syncers.append(make_syncer(env, NODE, b, watch_options(NODE), via.on_updates, via.on_status,
                                   syncer_type="bgp").start())
        wait_for(lambda: direct.in_sync and via.in_sync, 20, what="both in sync")
        wait_for(lambda: direct.render() == via.render(), 10, what="same bird.cfg")
        text = via.render()
        assert "local as 65010;" in text and "172.31.7.2" in text and "10.77.1.0/26" in text
        assert {k for k in via.keys if isinstance(k, BlockAffinityKey)} == {BlockAffinityKey(NODE, "10.77.1.0/26")}
        # Changes flow the same way.
        b.apply(ResourceKey("BGPPeer", "tor"), res("BGPPeer", "tor", {"peerIP": "172.31.7.200", "asNumber": 65000}))
        b.apply(BlockAffinityKey(NODE, "10.77.9.0/26"), {"state": "confirmed", "deleted": False})
        b.apply(BlockAffinityKey("bgp-node-2", "10.77.8.0/26"), {"state": "confirmed", "deleted": False})
        wait_for(lambda: "172.31.7.200" in via.render() and "10.77.9.0/26" in via.render(), 10, what="updates")
        wait_for(lambda: direct.render() == via.render(), 10, what="same bird.cfg after changes")
        assert not any(isinstance(k, BlockAffinityKey) and k.host != NODE for k in via.keys)

        # confd itself, configured as in calico-node (FELIX_TYPHAADDR), writes that bird.cfg via Typha.
        from bird.confd import Confd

        monkeypatch.setenv("FELIX_TYPHAADDR", typha.addr)
        monkeypatch.setenv("FELIX_CONFIGFILE", "/nonexistent/felix.cfg")
        path = str(tmp_path / "bird.cfg")
        confd = Confd(b, NODE, path, None, debounce=0)
        accepted = typha.metric("typha_connections_accepted")
        assert confd.run(oneshot=True) == 0
        assert type(confd._syncer).__name__ == "TyphaSyncer"
        assert typha.metric("typha_connections_accepted") == accepted + 1
        with open(path) as f:
            assert f.read() == direct.render()
    finally:
        for s in syncers:
            s.stop()
        typha.cleanup()
