"""The flow viewer: a page of recent flow-log records, filterable by
namespace, pod and verdict, and ``policy explain`` for a selected flow.

Routes (GET only):

* ``/`` — the page (:mod:`felix.web.page`); ``?namespace=&pod=&verdict=&flow=<id>``
  pre-set the filters and the selected flow;
* ``/api/flows?namespace=&pod=&verdict=`` — recent records, newest first;
* ``/api/explain?id=<record id>`` — the record and the evaluator's explanation of its flow.

Bound to ``FlowViewerHost`` (127.0.0.1 by default): the page shows pod
names and policies, and has no authentication.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from felix.web.page import PAGE

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    collector: Any

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path in ("/", "/index.html"):
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif url.path == "/api/flows":
            flows = self.collector.flows(q.get("namespace", ""), q.get("pod", ""), q.get("verdict", ""))
            self._json(200, {"flows": flows})
        elif url.path == "/api/explain":
            try:
                record = self.collector.record(int(q.get("id", "")))
            except ValueError:
                record = None
            if record is None:
                self._json(404, {"error": "no such flow"})
                return
            try:
                self._json(200, {"flow": record, "explain": self.collector.explain(record)})
            except Exception as exc:  # noqa: BLE001
                log.exception("flow viewer: explain failed")
                self._json(500, {"error": str(exc)})
        else:
            self._json(404, {"error": "not found"})

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("flow viewer: " + fmt, *args)


def serve(collector: Any, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("FlowViewerHandler", (_Handler,), {"collector": collector})
    server = ThreadingHTTPServer((host or "127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="flow-viewer", daemon=True).start()
    log.info("flow viewer on http://%s:%d/", host or "127.0.0.1", port)
    return server
