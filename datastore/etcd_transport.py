"""HTTP to etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, ...), stdlib only.

One :class:`GatewayEndpoint` per configured endpoint keeps a small pool of
keep-alive connections (one per concurrent caller: the CNI service runs
requests in threads), so a warm client pays one TCP (or TLS) handshake, not
one per request. Bodies are the gateway's JSON with base64 keys and values,
exactly what ``etcdctl`` would send over gRPC. Watches do not come through
here: they hold their own streaming connection (:mod:`datastore.etcd`).

Errors: connection problems surface as :class:`OSError` or
:class:`http.client.HTTPException` (the caller fails over to the next
endpoint); an answer with an HTTP error status as :class:`GatewayError`.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

API_PREFIX = "/v3"
MAX_IDLE = 8  # idle keep-alive connections kept per endpoint
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class GatewayError(Exception):
    """The gateway answered with an error status (etcd's message in ``message``)."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """Server verified against ``ca_file`` (system CAs without it); client
    certificate and key when both are given."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def split_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``https://host:port`` -> (scheme, host, port); scheme defaults to http, port to 2379."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    return url.scheme or "http", url.hostname or "127.0.0.1", url.port or 2379


class _OneWrite:
    """http.client sends the headers and the body with two writes (two
    wake-ups of the server per request); with a bytes body these send both
    as one."""

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes):
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        buffer = self._buffer  # type: ignore[attr-defined]
        buffer.extend((b"", b""))
        head = b"\r\n".join(buffer)
        del buffer[:]
        self.send(head + message_body)  # type: ignore[attr-defined]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class GatewayEndpoint:
    """One etcd endpoint: POST JSON to the gateway over pooled keep-alive connections."""

    def __init__(self, endpoint: str, *, timeout: float, context: ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.scheme, self.host, self.port = split_endpoint(endpoint)
        self.timeout = timeout
        self._context = context
        if self.scheme == "https" and self._context is None:
            self._context = ssl.create_default_context()
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """A new, unpooled connection (watch streams use their own), connected,
        with Nagle off: http.client writes the headers and the body with two
        sends, and the body must not wait for the server's delayed ACK."""
        t = self.timeout if timeout is None else timeout
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = _HTTPSConnection(self.host, self.port, timeout=t, context=self._context)
        else:
            conn = _HTTPConnection(self.host, self.port, timeout=t)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3<path>`` and return the decoded answer.

        A kept-alive connection that the server closed while idle fails on
        first use before etcd read anything; that is retried once on a new
        connection. Any other connection failure is raised."""
        data = json.dumps(body, separators=(",", ":")).encode()
        conn, reused = self._take()
        try:
            try:
                status, raw = self._exchange(conn, path, data)
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest, http.client.BadStatusLine):
                if not reused:
                    raise
                conn.close()
                conn = self.connect()
                status, raw = self._exchange(conn, path, data)
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError:
            reply = {"message": raw[:300].decode(errors="replace")}
        if status != 200:
            message = str(reply.get("message") or reply.get("error") or "") if isinstance(reply, dict) else ""
            code = reply.get("code") if isinstance(reply, dict) else None
            raise GatewayError(status, message or f"empty answer to {path}", code)
        return reply if isinstance(reply, dict) else {}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- internals ---------------------------------------------------------------

    def _exchange(self, conn: http.client.HTTPConnection, path: str, data: bytes) -> tuple[int, bytes]:
        conn.request("POST", API_PREFIX + path, body=data, headers=_HEADERS)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.will_close:
            conn.close()  # http.client reconnects on the next request
        return resp.status, raw

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self.connect(), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE and conn.sock is not None:
                self._idle.append(conn)
                return
        conn.close()
