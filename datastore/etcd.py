"""etcd v3 backend over etcd's HTTP/JSON gateway (client: etcd3gw).

Keys follow upstream Calico's layout (:mod:`datastore.keys`), so
``etcdctl get --prefix /calico/`` shows what we stored. Values are JSON.
Revisions are etcd ModRevisions as decimal strings. Creates, CAS updates and
guarded deletes are single etcd transactions.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

from datastore.backend import EventType, KVPair, ListResult, WatchEvent
from datastore.errors import AlreadyExists, Compacted, Conflict, NotFound, Unavailable
from datastore.keys import Key, ListOptions, ResourceKey, key_from_path

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds per request
ATTEMPTS_PER_ENDPOINT = 2


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
        import etcd3gw  # lazy: ~150 ms of imports (requests)

        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoints configured")
        self._endpoints = endpoints
        self._timeout = timeout
        self._clients = []
        for endpoint in endpoints:
            url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
            if url.scheme == "https" and not ca_cert_file:
                log.debug("https endpoint %s without a CA file: using system CAs", endpoint)
            self._clients.append(
                etcd3gw.Etcd3Client(
                    host=url.hostname or "127.0.0.1",
                    port=url.port or 2379,
                    protocol=url.scheme or "http",
                    ca_cert=ca_cert_file,
                    cert_cert=cert_file,
                    cert_key=key_file,
                    timeout=timeout,
                    api_path="/v3/",
                )
            )
        self._tls: dict[str, str | None] = {"ca": ca_cert_file, "cert": cert_file, "key": key_file}
        self._current = 0
        self._lock = threading.Lock()

    # -- transport -------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway, failing over between endpoints."""
        from etcd3gw import exceptions as gw_errors
        import requests

        last: BaseException | None = None
        for _ in range(ATTEMPTS_PER_ENDPOINT * len(self._clients)):
            with self._lock:
                client = self._clients[self._current]
            try:
                return client.post(client.get_url(path), json=body)
            except (gw_errors.ConnectionFailedError, gw_errors.ConnectionTimeoutError) as exc:
                last = exc
            except gw_errors.Etcd3Exception as exc:
                # The gateway answered with an error (e.g. etcd has no leader yet).
                last = exc
                detail = getattr(exc, "detail_text", "") or ""
                if "compacted" in detail:
                    raise
            except requests.RequestException as exc:
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
        if isinstance(key, ResourceKey):
            try:
                current = self.get(key)
                meta = current.value.get("metadata", {})
                value = dict(value)
                value["metadata"] = {
                    **{k: meta[k] for k in ("uid", "creationTimestamp") if k in meta},
                    **(value.get("metadata") or {}),
                }
            except NotFound:
                value = _with_creation_metadata(value)
        reply = self._post("/kv/put", {"key": _b64(key.path), "value": _encode_value(key, value)})
        rev = str(reply["header"]["revision"])
        return KVPair(key, _decode_value(key, _encode_value(key, value), rev), rev)

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
            client.session.close()

    # used by EtcdWatch
    def _open_stream(self, body: dict[str, Any]) -> "_Stream":
        last: BaseException | None = None
        for _ in range(len(self._endpoints)):
            with self._lock:
                index = self._current
            try:
                return _Stream(self._endpoints[index], self._tls, body, self._timeout)
            except (OSError, Unavailable) as exc:
                last = exc
            with self._lock:
                self._current = (self._current + 1) % len(self._clients)
        raise Unavailable("etcd watch could not be opened", _short(last))


class _Stream:
    """A watch stream on its own HTTP connection (stdlib), closable from any
    thread by shutting the socket down."""

    IDLE_TIMEOUT = 60.0  # no bytes for this long: reconnect (progress_notify keeps it alive)

    def __init__(self, endpoint: str, tls: dict[str, str | None], body: dict[str, Any],
                 timeout: float) -> None:
        import http.client

        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        host, port = url.hostname or "127.0.0.1", url.port or 2379
        if url.scheme == "https":
            import ssl

            context = ssl.create_default_context(cafile=tls.get("ca"))
            if tls.get("cert"):
                context.load_cert_chain(tls["cert"], tls.get("key"))  # type: ignore[arg-type]
            self._conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=context
            )
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
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


def _short(exc: BaseException | None) -> BaseException | None:
    """Trim requests' very long connection errors to their root cause; never
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
