"""A minimal Prometheus registry and exposition endpoint (text format 0.0.4).

Felix exports few metrics; the format is simple enough not to need a
client library: counters, gauges and histograms without labels.
"""
from __future__ import annotations

import bisect
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Union

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _fmt(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_fmt(self.value)}"]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_fmt(self.value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += 1
            self.sum += value
            self.count += 1

    def render(self) -> list[str]:
        with self._lock:
            lines = self.header()
            cumulative = 0
            for bound, n in zip(self.buckets + (float("inf"),), self.counts):
                cumulative += n
                lines.append(f'{self.name}_bucket{{le="{_fmt(bound)}"}} {cumulative}')
            lines.append(f"{self.name}_sum {repr(self.sum)}")
            lines.append(f"{self.name}_count {self.count}")
        return lines


Metric = Union[Counter, Gauge, Histogram]


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def counter(self, name: str, help_text: str) -> Counter:
        return self._add(Counter(name, help_text))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str) -> Gauge:
        return self._add(Gauge(name, help_text))  # type: ignore[return-value]

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, buckets))  # type: ignore[return-value]

    def _add(self, metric: Metric) -> Metric:
        return self._metrics.setdefault(metric.name, metric)

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics.values():
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


class FelixMetrics:
    """The metrics Felix exports (upstream names where upstream has one)."""

    def __init__(self) -> None:
        self.registry = r = Registry()
        self.apply_time = r.histogram("felix_int_dataplane_apply_time_seconds",
                                      "Time taken to apply one batch of changes to the dataplane.")
        self.apply_failures = r.counter("felix_int_dataplane_failures",
                                        "Number of times dataplane updates failed and will be retried.")
        self.local_endpoints = r.gauge("felix_active_local_endpoints", "Number of active endpoints on this host.")
        self.local_policies = r.gauge("felix_active_local_policies", "Number of active policies on this host.")
        self.resyncs = r.counter("felix_resyncs_started", "Number of times Felix has started resyncing with the datastore.")
        self.repairs = r.counter("felix_dataplane_repairs", "Number of dataplane objects rewritten because they drifted.")
        self.calc_time = r.histogram("felix_calc_graph_update_time_seconds",
                                     "Time to process one batch of datastore updates in the calculation graph.")
        self.applied_revision = r.gauge("felix_applied_datastore_revision",
                                        "Datastore revision of the newest update programmed into the dataplane.")


class _Handler(BaseHTTPRequestHandler):
    registry: Registry

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0].rstrip("/") != "/metrics":
            self.send_error(404)
            return
        data = self.registry.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("metrics: " + fmt, *args)


def serve(registry: Registry, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("MetricsHandler", (_Handler,), {"registry": registry})
    server = ThreadingHTTPServer((host or "0.0.0.0", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("Prometheus metrics on %s:%d", host or "0.0.0.0", port)
    return server
