"""Typha's counters and the Prometheus text rendering."""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += 1
            self.total += value
            self.n += 1

    def render(self, name: str) -> list[str]:
        with self._lock:
            lines, acc = [], 0
            for bound, count in zip(self.buckets, self.counts):
                acc += count
                lines.append(f'{name}_bucket{{le="{bound}"}} {acc}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {self.n}')
            lines.append(f"{name}_sum {self.total}")
            lines.append(f"{name}_count {self.n}")
            return lines


@dataclass
class Metrics:
    connections: int = 0
    connections_accepted: int = 0
    rejected_connections: int = 0
    shed_connections: int = 0
    slow_client_drops: int = 0
    protocol_errors: int = 0
    tls_rejects: int = 0
    snapshot_size: int = 0
    breadcrumb_revision: int = 0
    connection_target: int = 0
    typhas_seen: int = 0  # Typha endpoints in the Service (kubernetes rebalancing)
    nodes_seen: int = 0
    fanout_latency: Histogram = field(default_factory=Histogram)

    def render(self) -> str:
        lines = [
            "# HELP typha_connections_active Number of open client connections.",
            "# TYPE typha_connections_active gauge",
            f"typha_connections_active {self.connections}",
            "# TYPE typha_connections_accepted counter",
            f"typha_connections_accepted {self.connections_accepted}",
            "# TYPE typha_connections_rejected counter",
            f"typha_connections_rejected {self.rejected_connections}",
            "# TYPE typha_connections_dropped counter",
            f'typha_connections_dropped{{reason="shed"}} {self.shed_connections}',
            f'typha_connections_dropped{{reason="slow"}} {self.slow_client_drops}',
            f'typha_connections_dropped{{reason="protocol"}} {self.protocol_errors}',
            f'typha_connections_dropped{{reason="tls"}} {self.tls_rejects}',
            "# HELP typha_connections_target Connection count above which connections are shed.",
            "# TYPE typha_connections_target gauge",
            f"typha_connections_target {self.connection_target}",
            "# TYPE typha_k8s_typhas gauge",
            f"typha_k8s_typhas {self.typhas_seen}",
            "# TYPE typha_k8s_nodes gauge",
            f"typha_k8s_nodes {self.nodes_seen}",
            "# HELP typha_snapshot_size Number of KVs in the cached snapshot.",
            "# TYPE typha_snapshot_size gauge",
            f"typha_snapshot_size {self.snapshot_size}",
            "# TYPE typha_breadcrumb_revision gauge",
            f"typha_breadcrumb_revision {self.breadcrumb_revision}",
            "# HELP typha_fanout_latency_seconds Time from datastore update to write on a client socket.",
            "# TYPE typha_fanout_latency_seconds histogram",
        ]
        lines += self.fanout_latency.render("typha_fanout_latency_seconds")
        return "\n".join(lines) + "\n"
