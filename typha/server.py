"""Typha's sync server: one asyncio TCP listener fanning a SnapshotCache out to clients.

Per connection: handshake (hello within the handshake timeout), snapshot, the
cache's sync status, then deltas from a bounded queue. A client whose queue
fills or whose socket does not drain within the write timeout is disconnected;
other clients never wait on it. Pings go both ways; a client silent for longer
than the pong timeout is dropped. Bad or oversized frames close that
connection only.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from typing import Any

from typha import proto
from typha.cache import SnapshotCache
from typha.config import TyphaConfig
from typha.metrics import Metrics

WRITE_BUFFER_HIGH_WATER = 64 * 1024  # bytes queued in a client's transport before a send waits

log = logging.getLogger(__name__)

_conn_ids = itertools.count(1)


def server_ssl_context(cfg: TyphaConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.server_cert_file, cfg.server_key_file)
    ctx.load_verify_locations(cfg.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_allowed(cert: dict[str, Any] | None, cn: str, uri_san: str) -> bool:
    """Upstream's rule: the client cert must match the CN or the URI SAN (either)."""
    if not cert:
        return False
    if not cn and not uri_san:
        return True
    cns = {v for rdn in cert.get("subject", ()) for (k, v) in rdn if k == "commonName"}
    uris = {v for (k, v) in cert.get("subjectAltName", ()) if k == "URI"}
    return bool((cn and cn in cns) or (uri_san and uri_san in uris))


class Connection:
    def __init__(self, server: "SyncServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.cfg = server.cfg
        self.reader = reader
        self.writer = writer
        self.id = next(_conn_ids)
        self.node = "?"
        self.cache: SnapshotCache | None = None  # chosen by the client's hello
        self.queue: asyncio.Queue[tuple[bytes, float | None]] = asyncio.Queue(self.cfg.client_queue_size)
        self.closed = False
        self.close_reason = ""
        self.last_heard = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    # Called by the cache on the loop.
    def offer(self, frame: bytes, t0: float | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait((frame, t0))
        except asyncio.QueueFull:
            self.server.metrics.slow_client_drops += 1
            self.close("client fell behind (send queue full)")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("closing connection %d (%s): %s", self.id, self.node, reason)
        if self.cache is not None:
            self.cache.subscribers.discard(self)
        for task in self._tasks:
            task.cancel()
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    async def _send(self, frame: bytes) -> None:
        self.writer.write(frame)
        # Wait (bounded) only while the socket is backed up: an unconditional
        # wait_for costs a task per frame, which is most of the fan-out time
        # with hundreds of clients.
        if self.writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH_WATER:
            await asyncio.wait_for(self.writer.drain(), self.cfg.write_timeout)

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.TimeoutError:
            self.close("timeout")
        except proto.ProtocolError as exc:
            self.server.metrics.protocol_errors += 1
            self.close(f"protocol error: {exc}")
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.close(f"connection lost: {exc!r}")
        except asyncio.CancelledError:
            self.close(self.close_reason or "cancelled")
        finally:
            self.close(self.close_reason or "done")
            self.server.connections.discard(self)
            self.server.metrics.connections = len(self.server.connections)

    async def _run(self) -> None:
        if self.server.tls:
            cert = self.writer.get_extra_info("peercert")
            if not peer_allowed(cert, self.cfg.client_cn, self.cfg.client_uri_san):
                self.server.metrics.tls_rejects += 1
                self.close("client certificate not allowed")
                return
        hello = await asyncio.wait_for(proto.read_frame(self.reader, self.cfg.max_frame_size), self.cfg.handshake_timeout)
        if hello.get("type") != "hello":
            raise proto.ProtocolError(f"expected hello, got {hello.get('type')!r}")
        self.node = str(hello.get("node", "?"))
        syncer_type = hello.get("syncerType", proto.SYNCER_FELIX)
        cache = self.server.caches.get(syncer_type) if isinstance(syncer_type, str) else None
        if cache is None:
            raise proto.ProtocolError(f"unsupported syncer type {syncer_type!r}")
        self.cache = cache
        self.last_heard = time.monotonic()
        await self._send(proto.encode({"type": "serverHello", "version": proto.PROTOCOL_VERSION,
                                       "syncerType": syncer_type, "connId": self.id}))
        # Snapshot and subscription in one step on the loop: no delta is missed or repeated.
        snapshot = cache.snapshot_frames()
        status = proto.encode({"type": "status", "status": cache.status.value})
        cache.subscribers.add(self)
        log.info("connection %d: node %s (%s), sending snapshot of %d KVs", self.id, self.node, syncer_type,
                 len(cache.kvs))
        self._tasks = [
            asyncio.ensure_future(self._writer_loop(snapshot + [status])),
            asyncio.ensure_future(self._reader_loop()),
            asyncio.ensure_future(self._ping_loop()),
        ]
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _writer_loop(self, initial: list[bytes]) -> None:
        for frame in initial:
            await self._send(frame)
        metrics = self.server.metrics
        while True:
            frame, t0 = await self.queue.get()
            frames, starts = [frame], [t0]
            while not self.queue.empty():  # a burst goes out in one write
                frame, t0 = self.queue.get_nowait()
                frames.append(frame)
                starts.append(t0)
            await self._send(b"".join(frames))
            now = time.monotonic()
            for t0 in starts:
                if t0 is not None:
                    metrics.fanout_latency.observe(now - t0)

    async def _reader_loop(self) -> None:
        while True:
            msg = await proto.read_frame(self.reader, self.cfg.max_frame_size)
            self.last_heard = time.monotonic()
            kind = msg["type"]
            if kind == "ping":
                self.offer(proto.encode({"type": "pong", "ts": msg.get("ts")}), None)
            elif kind == "pong":
                pass
            else:
                raise proto.ProtocolError(f"unexpected message {kind!r}")

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.ping_interval)
            if time.monotonic() - self.last_heard > self.cfg.pong_timeout:
                self.close_reason = "no pong within the pong timeout"
                return
            self.offer(proto.encode({"type": "ping", "ts": time.time()}), None)


class SyncServer:
    """``caches``: one SnapshotCache per syncer type (``felix``, ``bgp``); a bare
    cache serves its own type only."""

    def __init__(self, cfg: TyphaConfig, caches: "SnapshotCache | dict[str, SnapshotCache]", metrics: Metrics) -> None:
        self.cfg = cfg
        self.caches = caches if isinstance(caches, dict) else {caches.syncer_type: caches}
        self.cache = self.caches.get(proto.SYNCER_FELIX) or next(iter(self.caches.values()))
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.tls = cfg.tls_enabled
        self._server: asyncio.AbstractServer | None = None
        self._shedder: asyncio.Task[None] | None = None
        self.target_connections = cfg.connection_target or cfg.max_connections_upper_limit
        metrics.connection_target = self.target_connections
        self.port = cfg.server_port

    async def start(self) -> None:
        ctx = server_ssl_context(self.cfg) if self.tls else None
        self._server = await asyncio.start_server(
            self._accept, self.cfg.server_host, self.cfg.server_port, ssl=ctx,
            ssl_handshake_timeout=self.cfg.handshake_timeout if ctx else None,
            backlog=1024, limit=2 ** 20,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._shedder = asyncio.ensure_future(self._shed_loop())
        log.info("Typha listening on %s:%d (tls=%s)", self.cfg.server_host, self.port, self.tls)

    async def stop(self) -> None:
        if self._shedder is not None:
            self._shedder.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close("server stopping")

    async def drain(self, duration: float) -> None:
        """Graceful shutdown: stop accepting, then close the connections one by one
        over 95 % of ``duration`` so clients spread over the remaining Typhas."""
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        random.shuffle(conns)
        if duration <= 0 or not conns:
            return
        interval = duration * 0.95 / len(conns)
        log.info("draining %d connections over %.1fs", len(conns), duration * 0.95)
        for conn in conns:
            conn.close("Typha shutting down")
            await asyncio.sleep(interval)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.cfg.max_connections_upper_limit:
            self.metrics.rejected_connections += 1
            log.warning("at the connection limit (%d): refusing", self.cfg.max_connections_upper_limit)
            transport = writer.transport
            if transport is not None:
                transport.abort()
            return
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        self.metrics.connections = len(self.connections)
        self.metrics.connections_accepted += 1
        await conn.run()

    def set_max_conns(self, target: int, why: str = "") -> None:
        """A new connection target (upstream's SetMaxConns): surplus is shed gradually."""
        if target != self.target_connections:
            log.info("connection target %d -> %d (%s); now %d connections", self.target_connections, target,
                     why or "set", len(self.connections))
            self.target_connections = target
            self.metrics.connection_target = target

    async def _shed_loop(self) -> None:
        """Above the target, drop one random connection per interval so clients rebalance."""
        while True:
            interval = self.cfg.connection_drop_interval_secs
            await asyncio.sleep(interval * (0.95 + random.random() / 10))
            if len(self.connections) > self.target_connections:
                victim = random.choice(list(self.connections))
                self.metrics.shed_connections += 1
                victim.close(f"shedding load: {len(self.connections)} > target {self.target_connections}")
