"""TyphaSyncer: Felix's view of the datastore through Typha.

Same callback interface as ``datastore.syncer.Syncer``: ``on_updates(list[Update])``
and ``on_status(SyncStatus)``, ``start()`` / ``stop()``. On every (re)connection
the client collects the server's snapshot, and at the in-sync marker delivers
only the difference from what it had delivered before (puts for new or changed
keys, deletes for keys that vanished), so a consumer sees one consistent state
across Typha restarts with no repeated update.
"""
from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from typing import Any, Callable

from datastore.keys import Key, key_from_path
from datastore.syncer import OnStatus, OnUpdates, SyncStatus, Update
from typha import proto
from typha.discovery import AddressTracker, NoTyphaError, StaticDiscoverer, TyphaAddr

log = logging.getLogger(__name__)


def client_ssl_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.check_hostname = False  # the server's identity is checked by CN / URI SAN below
    return ctx


def _cert_matches(cert: dict[str, Any], cn: str, uri_san: str) -> bool:
    if not cn and not uri_san:
        return True
    cns = {v for rdn in cert.get("subject", ()) for (k, v) in rdn if k == "commonName"}
    uris = {v for (k, v) in cert.get("subjectAltName", ()) if k == "URI"}
    return bool((cn and cn in cns) or (uri_san and uri_san in uris))


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class TyphaSyncer:
    """``addr``: "host:port" (or several, comma-separated), or an
    :class:`~typha.discovery.AddressTracker` over Service discovery.
    ``syncer_type``: which of Typha's caches to follow (``felix`` or ``bgp``);
    ``key_filter`` drops keys this client does not want (confd: other nodes'
    block affinities)."""

    def __init__(
        self,
        addr: "str | AddressTracker",
        node: str,
        on_updates: OnUpdates,
        on_status: OnStatus = lambda status: None,
        *,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        server_cn: str = "",
        server_uri_san: str = "",
        ping_interval: float = 10.0,
        read_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_frame_size: int = proto.DEFAULT_MAX_FRAME,
        syncer_type: str = proto.SYNCER_FELIX,
        key_filter: Callable[[Key], bool] | None = None,
        discovery_max_backoff: float = 30.0,
    ) -> None:
        self.tracker = addr if isinstance(addr, AddressTracker) else AddressTracker(StaticDiscoverer(addr))
        self.host, self.port = "", 0
        self.addr = ""  # the Typha of the current (or last) session
        self.node = node
        self.syncer_type = syncer_type
        self._key_filter = key_filter
        self._discovery_max_backoff = discovery_max_backoff
        self.discovery_failures = 0
        self._session_ok = False
        self._on_updates = on_updates
        self._on_status = on_status
        self._tls = client_ssl_context(ca_file, cert_file, key_file) if cert_file else None
        self._server_cn, self._server_uri_san = server_cn, server_uri_san
        self.ping_interval = ping_interval
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._max_frame = max_frame_size
        self.cache: dict[str, tuple[str, Any]] = {}  # what the consumer has been given
        self.revision = "0"
        self.connections = 0
        self.resyncs = 0
        self.in_sync = False
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._delivered_once = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "TyphaSyncer":
        self._thread = threading.Thread(target=self.run, name=f"typha-client-{self.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(10)

    def run(self) -> None:
        backoff = self._min_backoff
        discovery_backoff = 1.0
        self._on_status(SyncStatus.WAIT_FOR_DATASTORE)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                target = self.tracker.next_addr()
            except NoTyphaError as exc:
                self.discovery_failures += 1
                log.error("Typha is configured but cannot be used: %s; Felix keeps waiting (no direct "
                          "datastore access), next look-up in %.0fs", exc, discovery_backoff)
                self._stop.wait(discovery_backoff)
                discovery_backoff = min(discovery_backoff * 2, self._discovery_max_backoff)
                continue
            discovery_backoff = 1.0
            self.addr = target.addr
            self.host, self.port = split_addr(target.addr)
            self._session_ok = False
            try:
                self._session(target)
            except (OSError, proto.ProtocolError, ConnectionError) as exc:
                if self._stop.is_set():
                    break
                log.warning("Typha connection %s lost: %s", self.addr, exc)
            finally:
                sock, self._sock = self._sock, None
                if sock is not None:
                    sock.close()
            if self._stop.is_set():
                break
            if self.in_sync:
                self.in_sync = False
                self._on_status(SyncStatus.WAIT_FOR_DATASTORE)
            if self._session_ok or time.monotonic() - started > 10:
                # A working connection was lost (Typha died, shed us, shut down): not a
                # run of failures, so try the next Typha soon (jittered against a herd).
                backoff = self._min_backoff
            self._stop.wait(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self._max_backoff)

    # -- one connection ------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock)
            cert = sock.getpeercert() or {}
            if not _cert_matches(cert, self._server_cn, self._server_uri_san):
                sock.close()
                raise proto.ProtocolError("Typha's certificate does not match TyphaCN / TyphaURISAN")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _send(self, sock: socket.socket, msg: dict[str, Any]) -> None:
        sock.sendall(proto.encode(msg))

    def _session(self, target: TyphaAddr) -> None:
        sock = self._connect()
        self._sock = sock
        if self._stop.is_set():
            return
        self.connections += 1
        self._send(sock, {"type": "hello", "node": self.node, "version": proto.PROTOCOL_VERSION,
                          "syncerType": self.syncer_type, "info": f"pycalico {self.syncer_type}"})
        buf = proto.FrameBuffer(self._max_frame)
        fresh: dict[str, tuple[str, Any]] = {}
        synced = False
        hello_seen = False
        last_heard = last_ping = time.monotonic()
        sock.settimeout(min(1.0, self.ping_interval))
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_ping >= self.ping_interval:
                self._send(sock, {"type": "ping", "ts": time.time()})
                last_ping = now
            try:
                data = sock.recv(1 << 20)
            except (socket.timeout, ssl.SSLWantReadError):
                # Judge silence only on an empty read: a busy (CPU-starved) process
                # must not mistake its own slowness for a dead Typha.
                if time.monotonic() - last_heard > self.read_timeout:
                    raise proto.ProtocolError(f"nothing from Typha for {self.read_timeout}s") from None
                continue
            if not data:
                raise ConnectionError("Typha closed the connection")
            last_heard = time.monotonic()
            for msg in buf.feed(data):
                kind = msg["type"]
                if kind == "serverHello":
                    hello_seen = True
                    self._session_ok = True
                    self.tracker.connected(target)
                    log.info("connected to Typha %s (%s syncer, connection %s)", target.addr,
                             self.syncer_type, msg.get("connId"))
                    self._on_status(SyncStatus.RESYNC)
                elif not hello_seen:
                    raise proto.ProtocolError(f"expected serverHello, got {kind!r}")
                elif kind == "kvs":
                    if synced:
                        self._deliver_deltas(msg["kvs"])
                    else:
                        for kv in msg["kvs"]:
                            if kv["v"] is None:
                                fresh.pop(kv["k"], None)
                            else:
                                fresh[kv["k"]] = (kv["r"], kv["v"])
                            self._note_revision(kv["r"])
                elif kind == "status":
                    status = SyncStatus(msg["status"])
                    if status == SyncStatus.IN_SYNC and not synced:
                        synced = True
                        self._deliver_snapshot(fresh)
                        fresh = {}
                    elif synced:
                        self.in_sync = status == SyncStatus.IN_SYNC
                        self._on_status(status)
                elif kind == "ping":
                    self._send(sock, {"type": "pong", "ts": msg.get("ts")})
                elif kind == "pong":
                    pass
                else:
                    raise proto.ProtocolError(f"unexpected message {kind!r}")

    # -- delivery ------------------------------------------------------------------

    def _note_revision(self, rev: str) -> None:
        if rev.isdigit() and int(rev) > int(self.revision):
            self.revision = rev

    def _update(self, path: str, value: Any, rev: str) -> Update | None:
        key = key_from_path(path)
        if key is None or (self._key_filter is not None and not self._key_filter(key)):
            return None
        return Update(key, value, rev)

    def _deliver_snapshot(self, fresh: dict[str, tuple[str, Any]]) -> None:
        updates: list[Update] = []
        for path, (rev, value) in fresh.items():
            old = self.cache.get(path)
            if old is None or old[0] != rev or old[1] != value:
                u = self._update(path, value, rev)
                if u is not None:
                    updates.append(u)
        for path in self.cache:
            if path not in fresh:
                u = self._update(path, None, self.revision)
                if u is not None:
                    updates.append(u)
        self.cache = fresh
        self.resyncs += 1
        if updates or not self._delivered_once:
            self._delivered_once = True
            self._on_updates(updates)
        self.in_sync = True
        self._on_status(SyncStatus.IN_SYNC)

    def _deliver_deltas(self, kvs: list[dict[str, Any]]) -> None:
        updates: list[Update] = []
        for kv in kvs:
            path, value, rev = kv["k"], kv["v"], kv["r"]
            self._note_revision(rev)
            if value is None:
                if self.cache.pop(path, None) is None:
                    continue
            else:
                self.cache[path] = (rev, value)
            u = self._update(path, value, rev)
            if u is not None:
                updates.append(u)
        if updates:
            self._on_updates(updates)
