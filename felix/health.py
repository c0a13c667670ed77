"""Health reporting: ``/liveness`` and ``/readiness`` (upstream: port 9099).

Components register with a liveness timeout and report (live, ready)
periodically. The endpoints answer 200 when every reporter is live / ready
and 503 otherwise; the body is a small table of the reporters.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

log = logging.getLogger(__name__)


@dataclass
class _Reporter:
    name: str
    timeout: Optional[float]  # seconds without a report before not live
    live: bool = True
    ready: bool = False
    detail: str = ""
    last: float = field(default_factory=time.monotonic)


class HealthAggregator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reporters: dict[str, _Reporter] = {}

    def register(self, name: str, timeout: Optional[float] = None) -> None:
        with self._lock:
            self._reporters.setdefault(name, _Reporter(name, timeout))

    def report(self, name: str, live: bool = True, ready: bool = True, detail: str = "") -> None:
        with self._lock:
            r = self._reporters.setdefault(name, _Reporter(name, None))
            r.live, r.ready, r.detail, r.last = live, ready, detail, time.monotonic()

    def status(self) -> tuple[bool, bool, str]:
        now = time.monotonic()
        lines = [f"{'COMPONENT':<24} {'LIVE':<6} {'READY':<6} DETAIL"]
        live_all = ready_all = True
        with self._lock:
            for r in self._reporters.values():
                live = r.live and (r.timeout is None or now - r.last <= r.timeout)
                detail = r.detail if live or r.timeout is None else f"no report for {now - r.last:.0f}s"
                live_all &= live
                ready_all &= r.ready and live
                lines.append(f"{r.name:<24} {str(live).lower():<6} {str(r.ready).lower():<6} {detail}")
        return live_all, ready_all, "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    aggregator: HealthAggregator

    def do_GET(self) -> None:  # noqa: N802
        live, ready, body = self.aggregator.status()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/liveness":
            ok = live
        elif path == "/readiness":
            ok = ready
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("health: " + fmt, *args)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A probe that hangs up early is routine: one debug line, no traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("health: client %s went away: %s", client_address[0], exc)
            return
        super().handle_error(request, client_address)


def serve(aggregator: HealthAggregator, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("HealthHandler", (_Handler,), {"aggregator": aggregator})
    server = _Server((host or "0.0.0.0", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health endpoints on %s:%d", host or "0.0.0.0", port)
    return server
