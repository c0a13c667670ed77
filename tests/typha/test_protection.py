"""Slow clients, bad input, connection limits and shedding."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.typha.support import Collector, TyphaProcess, closed_by_peer, etcd_state, raw_connect, wait_for, wep
from typha import proto


@pytest.fixture
def typha_factory(etcd_backend, etcd_server):  # type: ignore[no-untyped-def]
    procs: list[TyphaProcess] = []

    def make(**env: str) -> TyphaProcess:
        proc = TyphaProcess(etcd_server.endpoint, **env).start()
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.cleanup()


def test_client_that_stops_reading_does_not_delay_others(etcd_backend, typha_factory, unique):  # type: ignore[no-untyped-def]
    typha = typha_factory(TYPHA_CLIENTQUEUESIZE="20")
    ns = f"ns-{unique}"
    clients = [Collector(typha.addr, f"node-{i}").start() for i in range(5)]
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, _, port = typha.addr.rpartition(":")
    stuck.connect((host, int(port)))
    stuck.sendall(proto.encode({"type": "hello", "node": "stuck", "syncerType": "felix"}))
    try:
        wait_for(lambda: all(c.syncer.in_sync for c in clients), 10)
        wait_for(lambda: typha.metric("typha_connections_active") == 6, 5)
        padding = "x" * 100_000
        worst = 0.0
        for i in range(150):
            key, value = wep(ns, f"pod-{i % 30}", f"10.4.{i // 250}.{i % 250}", padding + str(i))
            t0 = time.monotonic()
            kv = etcd_backend.apply(key, value)
            if i % 10 == 9:  # every 10th write: all healthy clients have it promptly
                arrival = (key.path, kv.revision)
                wait_for(lambda: all(arrival in c.arrivals for c in clients), 5, 0.002)
                worst = max(worst, max(c.arrivals[arrival] for c in clients) - t0)
        expected = etcd_state(etcd_backend)
        wait_for(lambda: all(c.snapshot() == expected for c in clients), 10)
        print(f"\nworst put->all-healthy-clients latency with a stuck peer: {worst * 1000:.1f} ms")
        assert worst < 1.0
        assert typha.metric('typha_connections_dropped{reason="slow"}') == 1
        assert typha.metric("typha_connections_active") == 5
        assert all(c.syncer.connections == 1 for c in clients)
    finally:
        stuck.close()
        for c in clients:
            c.stop()


def test_garbage_or_oversized_frame_closes_only_that_connection(etcd_backend, typha_factory, unique):  # type: ignore[no-untyped-def]
    typha = typha_factory(TYPHA_MAXFRAMESIZE="65536")
    good = Collector(typha.addr, "good").start()
    try:
        wait_for(lambda: good.syncer.in_sync, 10)
        garbage = raw_connect(typha.addr, hello=False)
        garbage.sendall(b"\x00\x00\x00\x10this is not json")
        oversized = raw_connect(typha.addr, hello=False)
        oversized.sendall(struct.pack(">I", 2**31) + b"{")
        not_json_object = raw_connect(typha.addr, hello=False)
        not_json_object.sendall(proto.encode({"hello": 1}))  # no type
        after_hello = raw_connect(typha.addr, hello=True)
        after_hello.sendall(b"\xff" * 64)  # length 0xffffffff: oversized
        wrong_first = raw_connect(typha.addr, hello=False)
        wrong_first.sendall(proto.encode({"type": "kvs", "kvs": []}))
        for s in (garbage, oversized, not_json_object, after_hello, wrong_first):
            assert closed_by_peer(s, 5), "server closes a connection sending bad input"
            s.close()
        assert typha.metric('typha_connections_dropped{reason="protocol"}') == 5
        # The good client kept its connection and still gets updates.
        key, value = wep(f"ns-{unique}", "pod-1")
        etcd_backend.apply(key, value)
        wait_for(lambda: good.snapshot() == etcd_state(etcd_backend), 5)
        assert good.syncer.connections == 1
        assert typha.http(typha.health_port, "/liveness")[0] == 200
    finally:
        good.stop()


def test_silent_client_is_dropped_after_handshake_timeout(typha_factory):  # type: ignore[no-untyped-def]
    typha = typha_factory(TYPHA_HANDSHAKETIMEOUT="0.5")
    silent = raw_connect(typha.addr, hello=False)
    t0 = time.monotonic()
    assert closed_by_peer(silent, 5)
    assert time.monotonic() - t0 < 3
    silent.close()


def test_max_connections_and_shedding(etcd_backend, typha_factory, unique):  # type: ignore[no-untyped-def]
    typha = typha_factory(TYPHA_MAXCONNECTIONSUPPERLIMIT="4", TYPHA_CONNECTIONTARGET="2",
                          TYPHA_CONNECTIONDROPINTERVALSECS="0.2")
    socks = [raw_connect(typha.addr) for _ in range(4)]
    try:
        wait_for(lambda: typha.metric("typha_connections_accepted") == 4, 5)
        extra = raw_connect(typha.addr)
        assert closed_by_peer(extra, 3), "over the upper limit: refused"
        extra.close()
        assert typha.metric("typha_connections_rejected") >= 1
        # Above the target of 2: one random connection shed per interval until at the target.
        wait_for(lambda: typha.metric("typha_connections_active") == 2, 5)
        assert typha.metric('typha_connections_dropped{reason="shed"}') == 2
        time.sleep(0.5)
        assert typha.metric("typha_connections_active") == 2, "no shedding at or below the target"
    finally:
        for s in socks:
            s.close()
    # A shed Felix reconnects and resyncs cleanly.
    etcd_backend.apply(*wep(f"ns-{unique}", "pod-1"))
    clients = [Collector(typha.addr, f"n{i}", min_backoff=0.05, max_backoff=0.3).start() for i in range(3)]
    try:
        expected = etcd_state(etcd_backend)
        wait_for(lambda: typha.metric('typha_connections_dropped{reason="shed"}') >= 3, 5)
        wait_for(lambda: all(c.snapshot() == expected for c in clients), 5)
        assert all(len(c.log) == 1 for c in clients), "reconnects repeat nothing"
    finally:
        for c in clients:
            c.stop()
