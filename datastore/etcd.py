"""etcd v3 backend over etcd's HTTP/JSON gateway (:mod:`datastore.etcd_transport`).

Keys follow upstream Calico's layout (:mod:`datastore.keys`), so
``etcdctl get --prefix /calico/`` shows what we stored. Values are JSON.
Revisions are etcd ModRevisions as decimal strings. Creates, CAS updates and
guarded deletes are single etcd transactions.
"""
from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

from datastore.backend import EventType, KVPair, ListResult, WatchEvent
from datastore.errors import AlreadyExists, Compacted, Conflict, NotFound, Unavailable
from datastore.etcd_transport import GatewayEndpoint, GatewayError, split_endpoint, tls_context
from datastore.keys import Key, ListOptions, ResourceKey, key_from_path

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds per request
ATTEMPTS_PER_ENDPOINT = 2
APPLY_ATTEMPTS = 5


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    """etcd range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _encode_value(key: Key, value: dict[str, Any]) -> str:
    if isinstance(key, ResourceKey):
        value = dict(value)
        meta = dict(value.get("metadata") or {})
        meta.pop("resourceVersion", None)
        value["metadata"] = meta
    return _b64(json.dumps(value, separators=(",", ":"), sort_keys=True))


def _decode_value(key: Key, raw: str, revision: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_unb64(raw)) if raw else {}
    if isinstance(key, ResourceKey):
        value.setdefault("metadata", {})["resourceVersion"] = revision
    return value


class EtcdBackend:
    """:class:`datastore.backend.Backend` for etcd v3 (3.4 or newer)."""

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        ca_cert_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoints configured")
        self._endpoints = endpoints
        self._timeout = timeout
        context = None
        if any(split_endpoint(e)[0] == "https" for e in endpoints):
            if not ca_cert_file:
                log.debug("https endpoints without a CA file: using system CAs")
            try:
                context = tls_context(ca_cert_file, cert_file, key_file)
            except OSError as exc:  # ssl.SSLError included
                raise ValueError(f"cannot load the etcd TLS files (ca {ca_cert_file}, cert {cert_file}, "
                                 f"key {key_file}): {exc}") from None
        self._clients = [GatewayEndpoint(e, timeout=timeout, context=context) for e in endpoints]
        self._current = 0
        self._lock = threading.Lock()

    # -- transport -------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway (``path`` under /v3), failing over between endpoints."""
        last: BaseException | None = None
        for _ in range(ATTEMPTS_PER_ENDPOINT * len(self._clients)):
            with self._lock:
                client = self._clients[self._current]
            try:
                return client.post(path, body)
            except OSError as exc:
                last = exc
                if _is_tls_error(exc):
                    # e.g. etcd closing the connection after the handshake: it did not
                    # accept our client certificate (or we do not trust its).
                    last = ConnectionError(
                        f"TLS error talking to {client.endpoint}: {exc} (check etcd_ca_cert_file, "
                        f"etcd_cert_file and etcd_key_file, and that etcd trusts this client certificate)")
                elif isinstance(exc, (ConnectionResetError, BrokenPipeError)) and client.scheme == "https":
                    # TLS 1.3: a refused client certificate looks like this
                    last = ConnectionError(
                        f"TLS connection to {client.endpoint} closed by the server without an answer ({exc}): "
                        f"etcd may not accept this client certificate (check etcd_cert_file and etcd_key_file)")
            except GatewayError as exc:
                # The gateway answered with an error (e.g. etcd has no leader yet).
                if "compacted" in exc.message:
                    raise Compacted(int(body.get("revision") or 0), 0) from None
                last = exc
            with self._lock:
                self._current = (self._current + 1) % len(self._clients)
            time.sleep(0.05)
        raise Unavailable(f"etcd unreachable at {','.join(self._endpoints)}", _short(last))

    def _txn(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._post("/kv/txn", body)

    # -- Backend ---------------------------------------------------------

    def get(self, key: Key) -> KVPair:
        reply = self._post("/kv/range", {"key": _b64(key.path)})
        kvs = reply.get("kvs") or []
        if not kvs:
            raise NotFound(key)
        kv = kvs[0]
        rev = str(kv["mod_revision"])
        return KVPair(key, _decode_value(key, kv.get("value", ""), rev), rev)

    def list(self, options: ListOptions) -> ListResult:
        prefix = options.prefix
        reply = self._post(
            "/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)}
        )
        items: list[KVPair] = []
        for kv in reply.get("kvs") or []:
            path = _unb64(kv["key"])
            key = key_from_path(path)
            if key is None or not _matches(options, key):
                continue
            rev = str(kv["mod_revision"])
            items.append(KVPair(key, _decode_value(key, kv.get("value", ""), rev), rev))
        return ListResult(items, str(reply["header"]["revision"]))

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        if isinstance(key, ResourceKey):
            value = _with_creation_metadata(value)
        path = _b64(key.path)
        reply = self._txn(
            {
                "compare": [
                    {"key": path, "target": "VERSION", "result": "EQUAL", "version": "0"}
                ],
                "success": [{"request_put": {"key": path, "value": _encode_value(key, value)}}],
                "failure": [],
            }
        )
        if not reply.get("succeeded"):
            raise AlreadyExists(key)
        rev = str(reply["header"]["revision"])
        return KVPair(key, _decode_value(key, _encode_value(key, value), rev), rev)

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        if not revision:
            raise ValueError(f"update of {key} needs the revision it was read at")
        path = _b64(key.path)
        reply = self._txn(
            {
                "compare": [
                    {
                        "key": path,
                        "target": "MOD",
                        "result": "EQUAL",
                        "mod_revision": str(revision),
                    }
                ],
                "success": [{"request_put": {"key": path, "value": _encode_value(key, value)}}],
                "failure": [{"request_range": {"key": path}}],
            }
        )
        if not reply.get("succeeded"):
            kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            if not kvs:
                raise NotFound(key)
            raise Conflict(key, revision, str(kvs[0]["mod_revision"]))
        rev = str(reply["header"]["revision"])
        return KVPair(key, _decode_value(key, _encode_value(key, value), rev), rev)

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        """Create or replace. A resource keeps the uid and creationTimestamp
        it was created with: one transaction when the key is new (put if
        absent, else read it), a compare-and-swap when it exists."""
        if not isinstance(key, ResourceKey):
            reply = self._post("/kv/put", {"key": _b64(key.path), "value": _encode_value(key, value)})
            rev = str(reply["header"]["revision"])
            return KVPair(key, _decode_value(key, _encode_value(key, value), rev), rev)
        path = _b64(key.path)
        for _ in range(APPLY_ATTEMPTS):
            created = _with_creation_metadata(value)
            encoded = _encode_value(key, created)
            reply = self._txn(
                {
                    "compare": [{"key": path, "target": "VERSION", "result": "EQUAL", "version": "0"}],
                    "success": [{"request_put": {"key": path, "value": encoded}}],
                    "failure": [{"request_range": {"key": path}}],
                }
            )
            if reply.get("succeeded"):
                rev = str(reply["header"]["revision"])
                return KVPair(key, _decode_value(key, encoded, rev), rev)
            kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            if not kvs:
                continue  # deleted in between: create again
            current = kvs[0]
            rev = str(current["mod_revision"])
            meta = _decode_value(key, current.get("value", ""), rev).get("metadata", {})
            replaced = dict(value)
            replaced["metadata"] = {
                **{k: meta[k] for k in ("uid", "creationTimestamp") if k in meta},
                **(value.get("metadata") or {}),
            }
            try:
                return self.update(key, replaced, rev)
            except (Conflict, NotFound):
                continue
        raise Conflict(key, None, None)

    def create_and_update(self, new_key: Key, new_value: dict[str, Any], key: Key, value: dict[str, Any],
                          revision: str) -> str:
        """Create ``new_key`` and replace ``key`` (iff at ``revision``) in one
        transaction: both or neither. Raises AlreadyExists (``new_key``),
        NotFound or Conflict (``key``); returns the revision written."""
        if isinstance(new_key, ResourceKey):
            new_value = _with_creation_metadata(new_value)
        new_path, path = _b64(new_key.path), _b64(key.path)
        reply = self._txn(
            {
                "compare": [
                    {"key": new_path, "target": "VERSION", "result": "EQUAL", "version": "0"},
                    {"key": path, "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)},
                ],
                "success": [
                    {"request_put": {"key": new_path, "value": _encode_value(new_key, new_value)}},
                    {"request_put": {"key": path, "value": _encode_value(key, value)}},
                ],
                "failure": [{"request_range": {"key": new_path}}, {"request_range": {"key": path}}],
            }
        )
        if reply.get("succeeded"):
            return str(reply["header"]["revision"])
        responses = reply.get("responses") or [{}, {}]
        if (responses[0].get("response_range") or {}).get("kvs"):
            raise AlreadyExists(new_key)
        kvs = (responses[1].get("response_range") or {}).get("kvs") or []
        if not kvs:
            raise NotFound(key)
        raise Conflict(key, revision, str(kvs[0]["mod_revision"]))

    def update_and_delete(self, key: Key, value: dict[str, Any], revision: str, del_key: Key,
                          del_revision: str) -> str:
        """Replace ``key`` (iff at ``revision``) and delete ``del_key`` (iff at
        ``del_revision``) in one transaction: both or neither. Raises NotFound
        or Conflict naming the key that did not match; returns the revision."""
        path, del_path = _b64(key.path), _b64(del_key.path)
        reply = self._txn(
            {
                "compare": [
                    {"key": path, "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)},
                    {"key": del_path, "target": "MOD", "result": "EQUAL", "mod_revision": str(del_revision)},
                ],
                "success": [
                    {"request_put": {"key": path, "value": _encode_value(key, value)}},
                    {"request_delete_range": {"key": del_path}},
                ],
                "failure": [{"request_range": {"key": path}}, {"request_range": {"key": del_path}}],
            }
        )
        if reply.get("succeeded"):
            return str(reply["header"]["revision"])
        responses = reply.get("responses") or [{}, {}]
        for k, expected, response in ((key, revision, responses[0]), (del_key, del_revision, responses[1])):
            kvs = (response.get("response_range") or {}).get("kvs") or []
            if not kvs:
                raise NotFound(k)
            if str(kvs[0]["mod_revision"]) != str(expected):
                raise Conflict(k, expected, str(kvs[0]["mod_revision"]))
        raise Conflict(key, revision, None)

    def read_many(self, items: list[Key | ListOptions]) -> list[KVPair | ListResult | None]:
        """Several gets (a key: its KVPair, or None when absent) and lists (a
        ListOptions: its ListResult) in one transaction: one round trip, one
        consistent revision."""
        ops = []
        for item in items:
            if isinstance(item, ListOptions):
                ops.append({"request_range": {"key": _b64(item.prefix), "range_end": _range_end(item.prefix)}})
            else:
                ops.append({"request_range": {"key": _b64(item.path)}})
        reply = self._txn({"compare": [], "success": ops, "failure": []})
        revision = str(reply["header"]["revision"])
        out: list[KVPair | ListResult | None] = []
        for item, response in zip(items, reply.get("responses") or [{}] * len(items)):
            kvs = (response.get("response_range") or {}).get("kvs") or []
            if isinstance(item, ListOptions):
                found: list[KVPair] = []
                for kv in kvs:
                    key = key_from_path(_unb64(kv["key"]))
                    if key is None or not _matches(item, key):
                        continue
                    rev = str(kv["mod_revision"])
                    found.append(KVPair(key, _decode_value(key, kv.get("value", ""), rev), rev))
                out.append(ListResult(found, revision))
            elif kvs:
                rev = str(kvs[0]["mod_revision"])
                out.append(KVPair(item, _decode_value(item, kvs[0].get("value", ""), rev), rev))
            else:
                out.append(None)
        return out

    def delete(self, key: Key, revision: str | None = None) -> None:
        path = _b64(key.path)
        compare = []
        if revision:
            compare.append(
                {"key": path, "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}
            )
        else:
            compare.append({"key": path, "target": "VERSION", "result": "GREATER", "version": "0"})
        reply = self._txn(
            {
                "compare": compare,
                "success": [{"request_delete_range": {"key": path}}],
                "failure": [{"request_range": {"key": path}}],
            }
        )
        if not reply.get("succeeded"):
            kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            if not kvs:
                raise NotFound(key)
            raise Conflict(key, revision, str(kvs[0]["mod_revision"]))

    def watch(self, options: ListOptions | list[ListOptions], revision: str) -> "EtcdWatch":
        opts = options if isinstance(options, list) else [options]
        return EtcdWatch(self, opts, int(revision))

    def ping(self) -> None:
        self._post("/maintenance/status", {})

    def current_revision(self) -> str:
        reply = self._post("/kv/range", {"key": _b64("/calico/"), "limit": 1, "count_only": True})
        return str(reply["header"]["revision"])

    def compact(self, revision: str) -> None:
        """Compact history up to ``revision`` (tests and operators)."""
        self._post("/kv/compaction", {"revision": str(revision), "physical": True})

    def close(self) -> None:
        for client in self._clients:
            client.close()

    # used by EtcdWatch
    def _open_stream(self, body: dict[str, Any]) -> "_Stream":
        last: BaseException | None = None
        for _ in range(len(self._endpoints)):
            with self._lock:
                index = self._current
            try:
                return _Stream(self._clients[index], body)
            except (OSError, Unavailable) as exc:
                last = exc
            with self._lock:
                self._current = (self._current + 1) % len(self._clients)
        raise Unavailable("etcd watch could not be opened", _short(last))


class _Stream:
    """A watch stream on its own HTTP connection (stdlib), closable from any
    thread by shutting the socket down."""

    IDLE_TIMEOUT = 60.0  # no bytes for this long: reconnect (progress_notify keeps it alive)

    def __init__(self, endpoint: GatewayEndpoint, body: dict[str, Any]) -> None:
        self._conn = endpoint.stream_connection()
        self._conn.request(
            "POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            text = self._resp.read(300)
            self._conn.close()
            raise Unavailable(f"etcd watch: HTTP {self._resp.status}: {text!r}")
        assert self._conn.sock is not None
        self._sock = self._conn.sock
        self._sock.settimeout(self.IDLE_TIMEOUT)

    def lines(self) -> Iterator[bytes]:
        while True:
            line = self._resp.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        import socket

        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()


def _is_tls_error(exc: BaseException) -> bool:
    """An ``ssl.SSLError`` (if :mod:`ssl` was never imported, it cannot be one)."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError)


def _short(exc: BaseException | None) -> BaseException | None:
    """Trim long connection errors to their root cause; never
    return an exception whose text is empty."""
    if exc is None:
        return None
    text = " ".join(
        str(part) for part in (exc, getattr(exc, "detail_text", None), exc.__cause__, exc.__context__) if part
    )
    for marker in ("Connection refused", "timed out", "Name or service not known", "No route"):
        if marker in text:
            return ConnectionError(marker)
    if not str(exc).strip():
        return ConnectionError(text.strip() or type(exc).__name__)
    return exc


def _matches(options: ListOptions, key: Key) -> bool:
    if isinstance(key, ResourceKey):
        if key.kind != options.kind:
            return False
        if options.namespace and key.namespace != options.namespace:
            return False
        return key.name.startswith(options.name_prefix) and options.accepts_node(key)
    return type(key).__name__ == _IPAM_KEY_TYPES.get(options.kind)


_IPAM_KEY_TYPES = {"Block": "BlockKey", "BlockAffinity": "BlockAffinityKey", "IPAMHandle": "HandleKey"}


def _with_creation_metadata(value: dict[str, Any]) -> dict[str, Any]:
    value = dict(value)
    meta = dict(value.get("metadata") or {})
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault(
        "creationTimestamp",
        datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    )
    value["metadata"] = meta
    return value


class EtcdWatch:
    """One etcd watch stream covering the requested prefixes, in revision order.

    Iterating yields :class:`WatchEvent`; if the start revision has been
    compacted the only event is RESYNC. A broken connection raises
    :class:`Unavailable` from the iterator; the caller resumes from the last
    revision it saw (see :mod:`datastore.syncer`).
    """

    def __init__(self, backend: EtcdBackend, options: list[ListOptions], revision: int) -> None:
        self._options = options
        prefixes = [o.prefix for o in options]
        common = prefixes[0]
        for p in prefixes[1:]:
            while not p.startswith(common):
                common = common[:-1]
        common = common or "/"
        self._prefixes = prefixes
        self._start = revision + 1
        self._stream = backend._open_stream(
            {
                "create_request": {
                    "key": _b64(common),
                    "range_end": _range_end(common),
                    "start_revision": str(self._start),
                    "prev_kv": True,
                    "progress_notify": True,
                }
            }
        )
        self._closed = False

    def close(self) -> None:
        self._closed = True
        self._stream.close()

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            for line in self._stream.lines():
                if not line.strip():
                    continue
                result = json.loads(line).get("result")
                if result is None:
                    error = json.loads(line).get("error", {})
                    raise Unavailable(f"etcd watch error: {error}")
                compact = int(result.get("compact_revision") or 0)
                if compact:
                    yield WatchEvent(EventType.RESYNC, revision=str(compact))
                    raise Compacted(self._start, compact)
                for event in result.get("events") or []:
                    out = self._event(event)
                    if out is not None:
                        yield out
                if result.get("canceled"):
                    raise Unavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
        except Compacted:
            return
        except (OSError, ValueError, AttributeError) as exc:
            # OSError includes socket.timeout after IDLE_TIMEOUT without a
            # byte; http.client raises AttributeError/ValueError when the
            # stream is closed under it from another thread (close()).
            if self._closed:
                return
            raise Unavailable("etcd watch stream broke", _short(exc)) from exc
        if not self._closed:
            raise Unavailable("etcd watch stream ended")

    def _event(self, event: dict[str, Any]) -> WatchEvent | None:
        kv = event["kv"]
        path = _unb64(kv["key"])
        if not any(path.startswith(p) for p in self._prefixes):
            return None
        key = key_from_path(path)
        if key is None or not any(_matches(o, key) for o in self._options):
            return None
        rev = str(kv["mod_revision"])
        prev = event.get("prev_kv")
        previous = _decode_value(key, prev.get("value", ""), str(prev["mod_revision"])) if prev else None
        if event.get("type") == "DELETE":
            return WatchEvent(EventType.DELETE, key, None, rev, previous)
        return WatchEvent(EventType.PUT, key, _decode_value(key, kv.get("value", ""), rev), rev, previous)
