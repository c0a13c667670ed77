"""HTTP to etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, ...), stdlib only.

One :class:`GatewayEndpoint` per configured endpoint keeps a small pool of
keep-alive connections (one per concurrent caller: the CNI service runs
requests in threads), so a warm client pays one TCP (or TLS) handshake, not
one per request. Bodies are the gateway's JSON with base64 keys and values,
exactly what ``etcdctl`` would send over gRPC. Watches do not come through
here: they hold their own streaming connection (:mod:`datastore.etcd`).

The unary requests use a small HTTP/1.1 client of their own (one write per
request, Content-Length or chunked answers, keep-alive) rather than
:mod:`http.client`, and :mod:`ssl` is only imported for https endpoints: both
cost the short-lived CNI executables ~15 ms of imports per exec.

Errors: connection problems surface as :class:`OSError` (a connection the
server closed without answering as :class:`ServerClosed`, a subclass of
:class:`ConnectionResetError`; TLS failures as ``ssl.SSLError``), so the
caller fails over to the next endpoint; an answer with an HTTP error status
as :class:`GatewayError`.
"""
from __future__ import annotations

import json
import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

API_PREFIX = "/v3"
MAX_IDLE = 8  # idle keep-alive connections kept per endpoint
MAX_HEADER_BYTES = 64 * 1024


class GatewayError(Exception):
    """The gateway answered with an error status (etcd's message in ``message``)."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code


class ServerClosed(ConnectionResetError):
    """The server closed the connection before a complete answer."""


class BadResponse(OSError):
    """The server's answer is not HTTP/1.1 we understand."""


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> "ssl.SSLContext":
    """Server verified against ``ca_file`` (system CAs without it); client
    certificate and key when both are given."""
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def split_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``https://host:port`` -> (scheme, host, port); scheme defaults to http,
    port to 2379; IPv6 hosts in brackets."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "http", endpoint
    hostport = rest.split("/", 1)[0].rpartition("@")[2]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    else:
        host, port = hostport, ""
    if port and not port.isdigit():
        raise ValueError(f"bad port in etcd endpoint {endpoint!r}")
    return (scheme or "http").lower(), host or "127.0.0.1", int(port) if port else 2379


class _Connection:
    """One keep-alive HTTP/1.1 connection (plain or TLS)."""

    def __init__(self, host: str, port: int, timeout: float, context: "ssl.SSLContext | None") -> None:
        sock = socket.create_connection((host, port), timeout)
        try:
            # Headers and body go in one write, and nothing waits for a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        self._buf = bytearray()

    def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send ``request``; return (status, body, server will close)."""
        assert self.sock is not None
        self.sock.sendall(request)
        head = self._read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        will_close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise BadResponse(f"bad Content-Length {headers['content-length']!r}") from None
            body = self._read_exact(length)
        else:  # no length: the body runs until the server closes
            body = self._read_to_eof()
            will_close = True
        return status, body, will_close

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    # -- reading -----------------------------------------------------------------

    def _fill(self) -> bool:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        start = 0
        while True:
            at = self._buf.find(marker, start)
            if at >= 0:
                out = bytes(self._buf[:at])
                del self._buf[:at + len(marker)]
                return out
            if len(self._buf) > limit:
                raise BadResponse(f"no {marker!r} within {limit} bytes")
            start = max(0, len(self._buf) - len(marker) + 1)
            if not self._fill():
                raise ServerClosed("the server closed the connection without a complete answer")

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ServerClosed("the server closed the connection in the middle of an answer")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self._read_until(b"\r\n", 1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                while self._read_until(b"\r\n", MAX_HEADER_BYTES):  # trailers, up to the empty line
                    pass
                return bytes(body)
            body += self._read_exact(size)
            self._read_exact(2)

    def _read_to_eof(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self._buf)
        self._buf.clear()
        return out


class GatewayEndpoint:
    """One etcd endpoint: POST JSON to the gateway over pooled keep-alive connections."""

    def __init__(self, endpoint: str, *, timeout: float, context: "ssl.SSLContext | None" = None) -> None:
        self.endpoint = endpoint
        self.scheme, self.host, self.port = split_endpoint(endpoint)
        self.timeout = timeout
        self._context = context
        if self.scheme == "https" and self._context is None:
            self._context = tls_context(None, None, None)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._request_head = (f"Host: {host}:{self.port}\r\nContent-Type: application/json\r\n"
                              f"Accept: application/json\r\n").encode()

    def stream_connection(self, timeout: float | None = None) -> Any:
        """A new, unpooled :class:`http.client.HTTPConnection`, connected, for
        a watch stream (long-lived, chunked: only the daemons open these)."""
        import http.client

        t = self.timeout if timeout is None else timeout
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=t, context=self._context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=t)
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
            except (ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                conn.close()
                conn = self._new_connection()
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

    def _new_connection(self) -> _Connection:
        return _Connection(self.host, self.port, self.timeout, self._context)

    def _exchange(self, conn: _Connection, path: str, data: bytes) -> tuple[int, bytes]:
        request = b"".join((b"POST ", API_PREFIX.encode(), path.encode(), b" HTTP/1.1\r\n", self._request_head,
                            b"Content-Length: ", str(len(data)).encode(), b"\r\n\r\n", data))
        status, raw, will_close = conn.exchange(request)
        if will_close:
            conn.close()
        return status, raw

    def _take(self) -> tuple[_Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new_connection(), False

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE and conn.sock is not None:
                self._idle.append(conn)
                return
        conn.close()
