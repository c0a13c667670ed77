"""HTTP to the Kubernetes API server: JSON requests and line-delimited watch streams.

Two interchangeable transports:

* :class:`HttpTransport` - stdlib ``http.client`` with keep-alive. Imports in
  ~25 ms, so the CNI plugin (one process per pod operation) uses it.
* :class:`KubeClientTransport` - the kubernetes Python client's ApiClient
  (~0.5-1 s to import). Used when the kubeconfig needs exec / auth-provider
  credentials, or when asked for (``DatastoreConfig`` callers that are
  long-running, or ``PYCALICO_K8S_TRANSPORT=kubernetes``).

Both raise :class:`ApiError` for HTTP error statuses (with the API's
``Status`` object) and :class:`datastore.errors.Unavailable` when the server
cannot be reached.
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
from typing import Any, Iterator, Protocol
from urllib.parse import urlencode, urlsplit

from datastore.errors import Unavailable
from datastore.kubernetes.kubeconfig import ClusterAuth

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
USER_AGENT = "pycalico/kdd"


class ApiError(Exception):
    """An HTTP error status from the API server."""

    def __init__(self, status: int, body: dict[str, Any] | None, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body or {}
        self.reason = str(self.body.get("reason") or "")
        self.message = str(self.body.get("message") or f"HTTP {status}")
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


class Stream(Protocol):
    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    server: str

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = JSON) -> dict[str, Any]: ...

    def stream(self, path: str, query: dict[str, Any]) -> Stream: ...

    def close(self) -> None: ...


def _query(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    clean = {k: ("true" if v is True else "false" if v is False else v)
             for k, v in query.items() if v is not None and v != ""}
    return "?" + urlencode(clean) if clean else ""


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return {"message": raw[:300].decode(errors="replace")}
    return value if isinstance(value, dict) else None


# -- stdlib transport ---------------------------------------------------------------


class HttpTransport:
    """Keep-alive HTTPS (or HTTP) connections to one API server, thread-safe."""

    def __init__(self, auth: ClusterAuth, timeout: float = 5.0) -> None:
        self.server = auth.server
        self._auth = auth
        self._timeout = timeout
        url = urlsplit(auth.server)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")
        self._context: ssl.SSLContext | None = None
        if self._https:
            ctx = ssl.create_default_context(cafile=auth.ca_file, cadata=auth.ca_data)
            if auth.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if auth.cert_file:
                ctx.load_cert_chain(auth.cert_file, auth.key_file)
            self._context = ctx
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _connect(self, timeout: float | None) -> Any:
        import http.client

        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON, "User-Agent": USER_AGENT}
        token = self._auth.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = JSON) -> dict[str, Any]:
        import http.client

        url = self._prefix + path + _query(query)
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers(content_type if payload is not None else None)
        for attempt in range(2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(self._timeout)
            try:
                conn.request(method, url, body=payload, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 0 and not isinstance(exc, TimeoutError):
                    continue  # a kept-alive connection the server (or its restart) closed
                raise Unavailable(f"Kubernetes API {self.server} unreachable", _short(exc)) from None
            if resp.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            if resp.status >= 400:
                raise ApiError(resp.status, _decode(raw), method, path)
            return _decode(raw) or {}
        raise AssertionError("unreachable")

    def stream(self, path: str, query: dict[str, Any]) -> "_HttpStream":
        return _HttpStream(self, self._prefix + path + _query(query))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._auth.cleanup()


class _HttpStream:
    """One watch on its own connection; ``close()`` from any thread ends it."""

    IDLE_TIMEOUT = 120.0  # bookmarks arrive about once a minute

    def __init__(self, transport: HttpTransport, url: str) -> None:
        import http.client

        self._conn = transport._connect(transport._timeout)
        try:
            self._conn.request("GET", url, headers=transport._headers(None))
            self._resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise Unavailable(f"Kubernetes API {transport.server} unreachable", _short(exc)) from None
        if self._resp.status >= 400:
            raw = self._resp.read()
            self._conn.close()
            raise ApiError(self._resp.status, _decode(raw), "WATCH", url)
        self._sock = self._conn.sock
        if self._sock is not None:
            self._sock.settimeout(self.IDLE_TIMEOUT)
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                line = self._resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        except (OSError, ValueError) as exc:
            if self._closed:
                return
            raise Unavailable("Kubernetes watch stream broke", _short(exc)) from None

    def close(self) -> None:
        self._closed = True
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()


def _short(exc: BaseException) -> BaseException:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "No route"):
        if marker in text:
            return ConnectionError(marker)
    return exc


# -- kubernetes Python client transport ----------------------------------------------


class KubeClientTransport:
    """The same interface over ``kubernetes.client.ApiClient`` (slow import)."""

    def __init__(self, kubeconfig: str | None, api_endpoint: str | None, timeout: float = 5.0) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
        if api_endpoint:
            configuration.host = api_endpoint.rstrip("/")
        self.server = configuration.host
        self._api = client.ApiClient(configuration)
        self._timeout = timeout

    def _call(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
              content_type: str | None, timeout: Any) -> Any:
        """One request; returns the (unread) urllib3 response of a 2xx."""
        from kubernetes.client.rest import ApiException
        import urllib3

        headers = {"Accept": JSON, "User-Agent": USER_AGENT}
        if content_type and body is not None:
            headers["Content-Type"] = content_type
        params = [(k, ("true" if v is True else "false" if v is False else v))
                  for k, v in (query or {}).items() if v is not None and v != ""]
        try:
            method, url, headers, body, _ = self._api.param_serialize(
                method=method, resource_path=path, query_params=params, header_params=headers,
                body=body, auth_settings=["BearerToken"],
            )
            resp = self._api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except ApiException as exc:
            raise ApiError(exc.status or 0, _decode(exc.body if isinstance(exc.body, bytes)
                                                    else (exc.body or "").encode()), method, path) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"Kubernetes API {self.server} unreachable", _short(exc)) from None
        raw = resp.response  # urllib3 response, not yet read (preload_content=False)
        if resp.status >= 400:
            data = raw.data
            raw.release_conn()
            raise ApiError(resp.status, _decode(data), method, path)
        return raw

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = JSON) -> dict[str, Any]:
        raw = self._call(method, path, query, body, content_type, self._timeout)
        try:
            return _decode(raw.data) or {}
        finally:
            raw.release_conn()

    def stream(self, path: str, query: dict[str, Any]) -> "_KubeClientStream":
        resp = self._call("GET", path, query, None, None, (self._timeout, _HttpStream.IDLE_TIMEOUT))
        return _KubeClientStream(resp)

    def close(self) -> None:
        self._api.close()


class _KubeClientStream:
    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buffer = b""
        try:
            for chunk in self._resp.stream(amt=None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except Exception as exc:  # noqa: BLE001 - urllib3 raises several kinds
            if self._closed:
                return
            raise Unavailable("Kubernetes watch stream broke", _short(exc)) from None

    def close(self) -> None:
        self._closed = True
        try:
            self._resp.shutdown()
        except Exception:  # noqa: BLE001 - older urllib3 has no shutdown()
            pass
        self._resp.release_conn()
