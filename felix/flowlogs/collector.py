"""Flow log collection: NFLOG packets -> aggregated flow records -> JSON lines.

The nftables rules that decide a connection log its first packet to NFLOG
(:mod:`felix.flowlogs.rules`); a reader thread turns each into a hit on the
rule and aggregates hits per flush interval (``FlowLogsFlushInterval``) by
reporter (``src``: egress of the source endpoint, ``dst``: ingress of the
destination), action, source and destination endpoint, protocol,
destination port and deciding rule. Each interval's records are appended to
``<FlowLogsFileDirectory>/flows.log`` (JSON lines, upstream's field names,
rotated at ``FlowLogsFileMaxFileSizeMB`` keeping ``FlowLogsFileMaxFiles``)
and kept in memory for the flow viewer (:mod:`felix.web`).

Staged policies are never in the data plane: for each record the flow is
evaluated with them applied (:mod:`felix.calc.evaluate`), which gives the
``pending_action`` ("would allow / would deny") and ``pending_policies``.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from datastore.keys import ResourceKey
from datastore.syncer import Update
from felix.calc.evaluate import STAGED_KINDS, Cluster, Flow, SideResult
from felix.flowlogs.nflog import NflogReader, Packet
from felix.flowlogs.rules import RuleLogger, RuleRef

log = logging.getLogger(__name__)

EVALUATION_KINDS = ("WorkloadEndpoint", "Profile", "Tier", "NetworkPolicy", "GlobalNetworkPolicy",
                    "NetworkSet", "GlobalNetworkSet", *STAGED_KINDS)
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 136: "udplite"}
RECENT = 2000


# -- metrics with labels ---------------------------------------------------------------------


class LabelledCounter:
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *values: str, amount: float = 1.0) -> None:
        with self._lock:
            self.values[values] = self.values.get(values, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for values, v in sorted(self.values.items()):
                text = ",".join(f'{k}="{_escape(x)}"' for k, x in zip(self.labels, values))
                lines.append(f"{self.name}{{{text}}} {int(v) if v.is_integer() else v}")
        return lines


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- the file ------------------------------------------------------------------------------


class FlowLogFile:
    """Appends JSON lines; rotates flows.log -> flows.log.1 ... at a size limit."""

    def __init__(self, directory: str, max_bytes: int, max_files: int, name: str = "flows.log") -> None:
        self.path = os.path.join(directory, name)
        self.max_bytes = max_bytes
        self.max_files = max(1, max_files)
        os.makedirs(directory, exist_ok=True)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records)
        if not data:
            return
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)

    def _rotate(self) -> None:
        oldest = f"{self.path}.{self.max_files - 1}"
        if self.max_files == 1:
            os.unlink(self.path)
            return
        if os.path.exists(oldest):
            os.unlink(oldest)
        for n in range(self.max_files - 2, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")


# -- aggregation ---------------------------------------------------------------------------


@dataclass
class _Agg:
    ref: RuleRef
    src_ip: str
    dst_ip: str
    proto: int
    dport: Optional[int]
    icmp_type: Optional[int]
    sport: Optional[int]
    start: float
    end: float
    packets: int = 0
    tuples: set[tuple[Any, ...]] = field(default_factory=set)


class FlowCollector:
    def __init__(self, hostname: str, logger: RuleLogger, out: Optional[FlowLogFile], flush_interval: float,
                 registry: Any = None, include_labels: bool = False, include_policies: bool = True) -> None:
        self.hostname = hostname
        self.logger = logger
        self.out = out
        self.flush_interval = max(0.1, flush_interval)
        self.include_labels = include_labels
        self.include_policies = include_policies
        self._lock = threading.Lock()
        self._resources: dict[ResourceKey, dict[str, Any]] = {}
        self._cluster: Optional[Cluster] = None
        self._pending: dict[tuple[Any, ...], _Agg] = {}
        self._next_id = 1
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reader: Optional[NflogReader] = None
        self.rule_packets = LabelledCounter(
            "felix_flowlogs_rule_packets_total",
            "New connections (first packets) decided by each policy / profile rule, by direction and action.",
            ("direction", "policy", "rule", "action"))
        self.records = LabelledCounter("felix_flowlogs_records_total", "Flow log records written.",
                                       ("reporter", "action", "pending_action"))
        if registry is not None:
            registry._add(self.rule_packets)
            registry._add(self.records)
            self.nflog_packets = registry.counter("felix_flowlogs_nflog_packets_total",
                                                  "Packets received from the flow-log NFLOG group.")
        else:
            self.nflog_packets = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FlowCollector":
        self.reader = NflogReader(self.logger.group)
        for target, name in ((self._read_loop, "flowlogs-nflog"), (self._flush_loop, "flowlogs-flush")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("flow logs: NFLOG group %d -> %s every %.1fs", self.logger.group,
                 self.out.path if self.out else "(memory)", self.flush_interval)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(3)
        self.flush()
        if self.reader is not None:
            self.reader.close()

    # -- datastore -------------------------------------------------------------------------

    def on_updates(self, updates: Iterable[Update]) -> None:
        with self._lock:
            for u in updates:
                key = u.key
                if not isinstance(key, ResourceKey) or key.kind not in EVALUATION_KINDS:
                    continue
                if u.value is None:
                    self._resources.pop(key, None)
                else:
                    self._resources[key] = u.value
                self._cluster = None

    def cluster(self) -> Cluster:
        with self._lock:
            if self._cluster is None:
                self._cluster = Cluster(list(self._resources.values()))
            return self._cluster

    # -- packets ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self.reader is not None
        while not self._stop.is_set():
            try:
                packets = list(self.reader.read(timeout=0.5))
            except OSError as exc:
                log.warning("flow logs: NFLOG read failed: %s", exc)
                time.sleep(0.5)
                continue
            for p in packets:
                self.handle(p)

    def handle(self, p: Packet) -> None:
        ref = self.logger.lookup(p.prefix)
        if ref is None:
            return
        if self.nflog_packets is not None:
            self.nflog_packets.inc()
        self.rule_packets.inc(ref.direction, ref.name or ref.kind, "-" if ref.rule is None else str(ref.rule),
                              ref.action)
        key = (ref, p.src, p.dst, p.protocol, p.dport, p.icmp_type)
        with self._lock:
            agg = self._pending.get(key)
            if agg is None:
                agg = self._pending[key] = _Agg(ref, p.src, p.dst, p.protocol, p.dport, p.icmp_type, p.sport,
                                                p.time, p.time)
            agg.end = p.time
            agg.packets += 1
            agg.tuples.add((p.src, p.sport, p.dst, p.dport, p.protocol))

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep logging flows
                log.exception("flow logs: flush failed")

    def flush(self) -> list[dict[str, Any]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return []
        cluster = self.cluster()
        records = [self._record(cluster, agg) for agg in pending.values()]
        with self._lock:
            for r in records:
                r["id"] = self._next_id
                self._next_id += 1
                self.recent.append(r)
        for r in records:
            self.records.inc(r["reporter"], r["action"], r.get("pending_action") or "-")
        if self.out is not None:
            self.out.write(records)
        return records

    # -- records ---------------------------------------------------------------------------

    def _record(self, cluster: Cluster, agg: _Agg) -> dict[str, Any]:
        ref = agg.ref
        src, dst = cluster.endpoint_by_ip(agg.src_ip), cluster.endpoint_by_ip(agg.dst_ip)
        r: dict[str, Any] = {
            "start_time": round(agg.start, 3),
            "end_time": round(agg.end, 3),
            "host": self.hostname,
            "source_ip": agg.src_ip,
            "source_namespace": src.namespace if src else "-",
            "source_name": src.pod if src else "-",
            "source_type": "wep" if src else "net",
            "dest_ip": agg.dst_ip,
            "dest_namespace": dst.namespace if dst else "-",
            "dest_name": dst.pod if dst else "-",
            "dest_type": "wep" if dst else "net",
            "dest_port": agg.dport if agg.dport is not None else agg.icmp_type,
            "proto": PROTO_NAMES.get(agg.proto, str(agg.proto)),
            "action": ref.action.lower(),
            "reporter": ref.reporter,
            "num_flows": len(agg.tuples),
            "num_flows_started": len(agg.tuples),
            "packets": agg.packets,
            "rule": {"kind": ref.kind, "name": ref.name, "tier": ref.tier, "direction": ref.direction,
                     "index": ref.rule},
        }
        if self.include_labels:
            r["source_labels"] = dict(src.labels) if src else {}
            r["dest_labels"] = dict(dst.labels) if dst else {}
        enforced = [ref.policy_string()]
        pending = enforced
        if cluster.staged:
            side = self._staged_side(cluster, agg)
            if side is not None:
                step = side.decider
                pending_ref = RuleRef(step.kind, ("staged:" if step.staged else "") + step.name, step.tier,
                                      ref.direction, step.rule, side.verdict)
                pending = [pending_ref.policy_string()]
                r["pending_action"] = side.verdict.lower()
                r["pending_rule"] = {"kind": step.kind, "name": step.name, "tier": step.tier,
                                     "index": step.rule, "staged": step.staged}
        if self.include_policies:
            r["policies"] = {"enforced_policies": enforced, "pending_policies": pending}
        return r

    def _staged_side(self, cluster: Cluster, agg: _Agg) -> Optional[SideResult]:
        flow = Flow(agg.src_ip, agg.dst_ip, agg.proto, agg.dport, agg.sport, agg.icmp_type,
                    0 if agg.icmp_type is not None else None)
        egress = agg.ref.direction == "Egress"
        ep = cluster.endpoint_by_ip(agg.src_ip if egress else agg.dst_ip)
        try:  # only the reporting (local) endpoint's side: one calc-graph view, this node's
            return cluster.side(ep, agg.ref.direction, flow, staged=True)
        except Exception:  # noqa: BLE001 - a record without its staged verdict beats none
            log.exception("flow logs: staged evaluation failed for %s", flow)
            return None

    # -- queries (flow viewer) ---------------------------------------------------------------

    def flows(self, namespace: str = "", pod: str = "", verdict: str = "", limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.recent)
        out = []
        for r in reversed(items):
            if namespace and namespace not in (r["source_namespace"], r["dest_namespace"]):
                continue
            if pod and pod not in (r["source_name"], r["dest_name"]):
                continue
            if verdict and r["action"] != verdict.lower():
                continue
            out.append(r)
            if len(out) >= limit:
                break
        return out

    def record(self, record_id: int) -> Optional[dict[str, Any]]:
        with self._lock:
            return next((r for r in self.recent if r["id"] == record_id), None)

    def explain(self, record: dict[str, Any]) -> dict[str, Any]:
        proto = next((n for n, name in PROTO_NAMES.items() if name == record["proto"]), None)
        icmp = proto in (1, 58)
        flow = Flow(record["source_ip"], record["dest_ip"], int(proto if proto is not None else record["proto"]),
                    None if icmp else record["dest_port"], None,
                    record["dest_port"] if icmp else None, 0 if icmp else None)
        return self.cluster().explain(flow).to_dict()


def start_flow_logs(cfg: Any, hostname: str, dataplane: Any, registry: Any) -> FlowCollector:
    """Wire flow logs into an nftables data plane (before it renders rules) and start reading."""
    logger = RuleLogger(int(cfg.flow_logs_nflog_group))
    dataplane.rule_logger = logger
    out = FlowLogFile(cfg.flow_logs_file_directory, int(cfg.flow_logs_file_max_file_size_mb) * 1024 * 1024,
                      int(cfg.flow_logs_file_max_files))
    return FlowCollector(hostname, logger, out, float(cfg.flow_logs_flush_interval), registry,
                         bool(cfg.flow_logs_file_include_labels), bool(cfg.flow_logs_file_include_policies)).start()
