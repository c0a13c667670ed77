"""Unit tests of Typha's pure logic: framing, config, rebalancing target, cert matching."""
from __future__ import annotations

import asyncio
import struct

import pytest

from typha import proto
from typha.config import TyphaConfig, rebalance_target
from typha.server import peer_allowed


def test_frame_roundtrip_and_split_reads() -> None:
    frames = proto.encode({"type": "kvs", "kvs": [{"k": "/a", "v": {"x": 1}, "r": "5"}]}) + proto.encode({"type": "ping"})
    buf = proto.FrameBuffer()
    out = []
    for i in range(len(frames)):
        out += buf.feed(frames[i:i + 1])
    assert [m["type"] for m in out] == ["kvs", "ping"]
    assert out[0]["kvs"][0]["v"] == {"x": 1}


def test_frame_limits_and_garbage() -> None:
    with pytest.raises(proto.ProtocolError):
        proto.FrameBuffer(100).feed(struct.pack(">I", 101))
    with pytest.raises(proto.ProtocolError):
        proto.FrameBuffer().feed(struct.pack(">I", 3) + b"abc")
    with pytest.raises(proto.ProtocolError):
        proto.FrameBuffer().feed(proto.encode({"no": "type"}))

    async def read(data: bytes) -> dict:  # type: ignore[type-arg]
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await proto.read_frame(reader, 20)

    with pytest.raises(proto.ProtocolError):
        asyncio.run(read(struct.pack(">I", 21) + b"x" * 21))
    assert asyncio.run(read(proto.encode({"type": "a"})))["type"] == "a"


def test_config_from_env_upstream_names() -> None:
    cfg = TyphaConfig.from_env({"TYPHA_MAXCONNECTIONSUPPERLIMIT": "7", "TYPHA_PINGINTERVAL": "2.5",
                                "TYPHA_CLIENTCN": "felix", "TYPHA_HEALTHENABLED": "false"})
    assert (cfg.max_connections_upper_limit, cfg.ping_interval, cfg.client_cn, cfg.health_enabled) == (7, 2.5, "felix", False)
    defaults = TyphaConfig.from_env({})
    assert (defaults.server_port, defaults.health_port, defaults.prometheus_metrics_port) == (5473, 9098, 9093)
    assert not defaults.tls_enabled
    with pytest.raises(ValueError):
        TyphaConfig.from_env({"TYPHA_SERVERCERTFILE": "/x.crt"})


def test_rebalance_target() -> None:
    assert rebalance_target(400, 10000, 4, 1000, 1) == 10000  # single Typha: the upper limit
    assert rebalance_target(400, 10000, 1, 1000, 3) == 601
    assert rebalance_target(400, 10000, 1, 10, 3) == 400
    assert rebalance_target(400, 500, 1, 1000, 2) == 500


def test_peer_allowed_cn_or_uri_san() -> None:
    cert = {"subject": ((("commonName", "typha-client"),),),
            "subjectAltName": (("URI", "spiffe://x/felix"), ("DNS", "a"))}
    assert peer_allowed(cert, "typha-client", "")
    assert peer_allowed(cert, "other", "spiffe://x/felix")
    assert not peer_allowed(cert, "other", "spiffe://x/other")
    assert peer_allowed(cert, "", "")
    assert not peer_allowed(None, "", "")


def test_felix_typha_settings_pick_the_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datastore.syncer import Syncer
    from felix.typha import make_syncer
    from typha.client import TyphaSyncer
    from typha.discovery import ServiceDiscoverer, StaticDiscoverer

    cfg_file = tmp_path / "felix.cfg"
    cfg_file.write_text("[global]\nTyphaK8sServiceName = calico-typha\n")
    noop = lambda *a: None  # noqa: E731

    def build(env: dict[str, str]) -> object:
        return make_syncer(env, "node-1", object(), [], noop, noop)  # type: ignore[arg-type]

    assert isinstance(build({"FELIX_CONFIGFILE": "/nonexistent"}), Syncer)
    direct = build({"FELIX_CONFIGFILE": "/nonexistent", "FELIX_TYPHAADDR": "10.0.0.1:5473,10.0.0.2:5473"})
    assert isinstance(direct, TyphaSyncer) and isinstance(direct.tracker.discoverer, StaticDiscoverer)
    assert [a.addr for a in direct.tracker.discoverer.load()] == ["10.0.0.1:5473", "10.0.0.2:5473"]
    found = build({"FELIX_CONFIGFILE": str(cfg_file)})
    assert isinstance(found, TyphaSyncer)
    disc = found.tracker.discoverer
    assert isinstance(disc, ServiceDiscoverer)
    assert (disc.service, disc.namespace, disc.port_name, disc.node) == ("calico-typha", "kube-system", "calico-typha", "node-1")
    env = {"FELIX_CONFIGFILE": str(cfg_file), "FELIX_TYPHAK8SNAMESPACE": "calico-system",
           "FELIX_TYPHAADDR": ""}
    assert build(env).tracker.discoverer.namespace == "calico-system"  # type: ignore[attr-defined]
    # TyphaAddr wins over the Service.
    both = build({"FELIX_CONFIGFILE": str(cfg_file), "FELIX_TYPHAADDR": "10.0.0.9:5473"})
    assert isinstance(both.tracker.discoverer, StaticDiscoverer)  # type: ignore[attr-defined]


def test_typha_rebalancing_config() -> None:
    cfg = TyphaConfig.from_env({"TYPHA_CONNECTIONREBALANCINGMODE": "Kubernetes", "TYPHA_K8SSERVICENAME": "t",
                                "TYPHA_CONNECTIONDROPINTERVALSECS": "0.5"})
    assert (cfg.connection_rebalancing_mode, cfg.k8s_service_name, cfg.k8s_namespace, cfg.k8s_port_name,
            cfg.connection_drop_interval_secs, cfg.k8s_service_poll_interval_secs) == (
        "kubernetes", "t", "kube-system", "calico-typha", 0.5, 30.0)
    with pytest.raises(ValueError):
        TyphaConfig.from_env({"TYPHA_CONNECTIONREBALANCINGMODE": "round-robin"})
    # Upstream's integer arithmetic: 2 syncer types, 20 nodes.
    assert rebalance_target(1, 10000, 2, 20, 2) == 50
    assert rebalance_target(1, 10000, 2, 20, 3) == 26
