"""Felix's wiring: syncer -> calc graph -> dataplanes, plus timers and health.

Threads: the syncer delivers updates and status on its own thread into a
queue; everything else (calc graph, nftables, routes) runs on the main loop,
which drains the queue in batches, so a burst of updates becomes one
dataplane transaction.

Start-up: updates are buffered until the syncer is first in sync; the
FelixConfiguration resources in that snapshot complete the configuration,
then the dataplane is built and programmed with one atomic table rewrite
(the previous run's rules keep working until that commit).

Datastore outage: the syncer reconnects with backoff; the programmed state is
kept (and still repaired by the refresh timer). When the syncer resyncs it
delivers only the differences, so working rules are never flushed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from typing import Any, Mapping, Optional

from datastore.backend import Backend
from datastore.keys import ListOptions, ResourceKey
from datastore.syncer import SyncStatus, Syncer, Update
from felix import health, metrics
from felix.calc.graph import CalcGraph, LocalEndpoint
from felix.config import FelixConfig, load_config, use_nftables
from felix.dataplane.ipsets import IpsetError
from felix.dataplane.iptables import IptablesError
from felix.dataplane.nft import Nft, NftError
from felix.dataplane.nftables import DataplaneConfig, NftablesDataplane
from felix.dataplane.routes import RouteManager

log = logging.getLogger(__name__)

WATCHED_KINDS = (
    "FelixConfiguration",
    "Tier",
    "Profile",
    "GlobalNetworkPolicy",
    "NetworkPolicy",
    "GlobalNetworkSet",
    "NetworkSet",
    "IPPool",
    "WorkloadEndpoint",
)
DYNAMIC_PARAMS = {
    "DefaultEndpointToHostAction", "UnknownInterfaceAction", "DisableConntrackInvalidCheck",
    "NATOutgoingAddress", "NftablesRefreshInterval", "IptablesRefreshInterval",
    "RouteRefreshInterval", "LogSeverityScreen", "LogSeverityFile", "ReportingInterval",
    "ReportingTTL", "IpsetsRefreshInterval", "InterfaceRefreshInterval",
}
LIVENESS_TIMEOUT = 30.0
DATAPLANE_ERRORS = (NftError, IptablesError, IpsetError)


def dataplane_config(cfg: FelixConfig) -> DataplaneConfig:
    mask = cfg.nftables_mark_mask if cfg.sources.get("NftablesMarkMask") != "default" else cfg.iptables_mark_mask
    return DataplaneConfig(
        table=cfg.nftables_table_name,
        mark_mask=mask,
        interface_prefixes=tuple(cfg.interface_prefix),
        endpoint_to_host_action=cfg.default_endpoint_to_host_action,
        unknown_interface_action=cfg.unknown_interface_action,
        disable_conntrack_invalid_check=cfg.disable_conntrack_invalid_check,
        ipv6=cfg.ipv6_support,
        log_prefix=cfg.log_prefix,
        nat_outgoing_address=cfg.nat_outgoing_address,
    )


class _Fanout:
    """The calc graph's sink: everything to nftables; endpoints to routes too."""

    def __init__(self, dp: NftablesDataplane, routes: RouteManager) -> None:
        self._dp = dp
        self._routes = routes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dp, name)

    def endpoint_update(self, ep: LocalEndpoint) -> None:
        self._dp.endpoint_update(ep)
        self._routes.endpoint_update(ep)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self._dp.endpoint_removed(endpoint_id)
        self._routes.endpoint_removed(endpoint_id)


class Daemon:
    def __init__(self, backend: Backend, boot_config: FelixConfig,
                 env: Optional[Mapping[str, str]] = None, config_file: Optional[str] = None,
                 nft: Optional[Nft] = None) -> None:
        self.backend = backend
        self.env = dict(os.environ if env is None else env)
        self.config_file = config_file
        self.config = boot_config
        self.hostname = boot_config.hostname
        self.health = health.HealthAggregator()
        self.metrics = metrics.FelixMetrics()
        self._nft = nft
        self._queue: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._stop = threading.Event()
        self._servers: list[Any] = []
        self._felix_configs: dict[str, dict[str, Any]] = {}
        self.dataplane: Optional[Any] = None  # NftablesDataplane | IptablesDataplane
        self.routes: Optional[RouteManager] = None
        self.graph: Optional[CalcGraph] = None
        self.syncer: Optional[Syncer] = None
        self.sync_status = SyncStatus.WAIT_FOR_DATASTORE
        self.applied_revision = 0
        self._seen_revision = 0
        self._apply_failures = 0
        self._retry_at: Optional[float] = None
        self._backoff = 0.2
        self.first_apply_done = threading.Event()
        self.flowlogs: Optional[Any] = None  # felix.flowlogs.collector.FlowCollector

    # -- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(("wake", None))

    def run(self) -> None:
        cfg = self.config
        self.health.register("felix-startup", None)
        self.health.register("calc-graph", LIVENESS_TIMEOUT)
        self.health.register("int-dataplane", LIVENESS_TIMEOUT)
        self.health.report("felix-startup", ready=False, detail="waiting for datastore sync")
        if cfg.health_enabled:
            self._servers.append(health.serve(self.health, cfg.health_host, cfg.health_port))
        cni_service = None
        if cfg.cni_service_enabled:  # the CNI fast path, served from this process
            from cni.hosting import host_service

            try:
                cni_service = host_service(cfg.cni_service_socket)
            except OSError as exc:  # the CNI executables then work standalone
                log.error("cannot serve the CNI socket %s: %s", cfg.cni_service_socket, exc)
        from felix.typha import make_syncer  # Typha when TyphaAddr is set

        self.syncer = make_syncer(
            self.env, self.hostname, self.backend,
            [ListOptions(k) for k in WATCHED_KINDS + _flow_log_kinds(cfg)],
            lambda updates: self._queue.put(("updates", updates)),
            lambda status: self._queue.put(("status", status)),
        ).start()
        # Import the resource models while the syncer lists (it waits on I/O).
        from datastore.kinds import model_for

        for kind in WATCHED_KINDS:
            model_for(kind)
        try:
            self._loop()
        finally:
            if cni_service is not None:
                cni_service.stop()
            self.syncer.stop()
            if self.flowlogs is not None:
                self.flowlogs.stop()
            for server in self._servers:
                server.shutdown()
                server.server_close()
            if self.routes is not None:
                self.routes.close()
            log.info("Felix stopped")

    # -- main loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        pending: list[Update] = []
        now = time.monotonic()
        next_verify = next_routes = now
        while not self._stop.is_set():
            now = time.monotonic()
            deadlines = [now + 1.0]
            if self.dataplane is not None:
                deadlines += [next_verify, next_routes]
                if self._retry_at is not None:
                    deadlines.append(self._retry_at)
                if self.routes is not None and self.routes.pending:
                    deadlines.append(now + 0.5)
            timeout = max(0.0, min(deadlines) - now)
            items = []
            try:
                items.append(self._queue.get(timeout=timeout))
                while True:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for kind, payload in items:
                if kind == "updates":
                    pending.extend(payload)
                elif kind == "status":
                    self._on_status(payload)
            if self._stop.is_set():
                break
            self.health.report("calc-graph", ready=self.dataplane is not None,
                               detail=f"datastore {self.sync_status.value}")
            if self.dataplane is None:
                if self.sync_status != SyncStatus.IN_SYNC:
                    continue
                self._start_dataplane(pending)
                next_verify = time.monotonic() + self._refresh_interval()
                next_routes = time.monotonic() + self.config.route_refresh_interval
            if pending:
                self._process(pending)
                pending = []
            now = time.monotonic()
            if self.dataplane is not None and now >= next_verify:
                self._verify()
                next_verify = now + max(0.5, self._refresh_interval())
            if (self.dataplane is not None and self.dataplane.dirty
                    and (self._retry_at is None or now >= self._retry_at)):
                self._apply()
            if self.routes is not None:
                full = now >= next_routes
                if full:
                    next_routes = now + max(0.5, self.config.route_refresh_interval)
                if full or self.routes.dirty or self.routes.pending:
                    self._apply_routes(full)
            self.health.report("int-dataplane", ready=self._apply_failures < 3 and self.first_apply_done.is_set(),
                               detail=f"{self._apply_failures} consecutive failures" if self._apply_failures else "")

    def _on_status(self, status: SyncStatus) -> None:
        if status == SyncStatus.RESYNC:
            self.metrics.resyncs.inc()
        if status != self.sync_status:
            log.info("datastore status: %s", status.value)
        self.sync_status = status

    # -- start-up ----------------------------------------------------------------------------

    def _start_dataplane(self, snapshot: list[Update]) -> None:
        for u in snapshot:
            self._note_felix_config(u)
        self.config = self._resolve_config()
        self._log_config()
        cfg = self.config
        if cfg.prometheus_metrics_enabled:
            self._servers.append(metrics.serve(self.metrics.registry, cfg.prometheus_metrics_host,
                                               cfg.prometheus_metrics_port))
        self.dataplane = self._make_dataplane(cfg)
        self._start_flow_logs(cfg)
        self.routes = RouteManager(protocol=cfg.device_route_protocol, ipv6=cfg.ipv6_support,
                                   ip_forwarding=cfg.ip_forwarding.lower() == "enabled")
        if cfg.route_sync_disabled:
            self.routes = None
        sink: Any = _Fanout(self.dataplane, self.routes) if self.routes else self.dataplane
        self.graph = CalcGraph(self.hostname, sink)
        log.info("in sync with the datastore (%d resources): programming %s", len(snapshot), self._dp_name())
        self.health.report("felix-startup", ready=True, detail="")

    def _start_flow_logs(self, cfg: FelixConfig) -> None:
        """Flow logs (FlowLogsFileEnabled, nftables only) and the flow viewer page (FlowViewerEnabled)."""
        if not cfg.flow_logs_file_enabled:
            if cfg.flow_viewer_enabled:
                log.warning("FlowViewerEnabled needs FlowLogsFileEnabled: no flow viewer")
            return
        if not isinstance(self.dataplane, NftablesDataplane):
            log.warning("flow logs need the nftables data plane (NftablesMode): disabled")
            return
        from felix.flowlogs.collector import start_flow_logs

        try:
            self.flowlogs = start_flow_logs(cfg, self.hostname, self.dataplane, self.metrics.registry)
        except OSError as exc:
            log.error("flow logs: could not start (%s): disabled", exc)
            self.dataplane.rule_logger = None
            return
        if cfg.flow_viewer_enabled:
            from felix.web.server import serve as serve_viewer

            self._servers.append(serve_viewer(self.flowlogs, cfg.flow_viewer_host, cfg.flow_viewer_port))

    def _refresh_interval(self) -> float:
        if use_nftables(self.config):
            return float(self.config.nftables_refresh_interval)
        return float(self.config.iptables_refresh_interval)

    def _dp_name(self) -> str:
        if isinstance(self.dataplane, NftablesDataplane):
            return f"table inet {self.config.nftables_table_name} via {self.dataplane.table.nft.backend}"
        return f"cali- chains via {getattr(self.dataplane, 'backend', '?')}-restore"

    def _make_dataplane(self, cfg: FelixConfig) -> Any:
        """The data plane chosen by NftablesMode; the other back end's rules go."""
        from felix.dataplane import iptables_dataplane as ipt

        if use_nftables(cfg):
            try:
                removed = ipt.remove_iptables_state(cfg.iptables_lock_timeout_secs)
                if removed:
                    log.info("removed iptables data plane leftovers: %s", ", ".join(removed[:20]))
            except (DATAPLANE_ERRORS + (OSError,)) as exc:
                log.warning("could not remove iptables leftovers: %s", exc)
            return NftablesDataplane(dataplane_config(cfg), self._nft or Nft())
        from felix.dataplane.iptables import detect_backend

        variant = detect_backend(cfg.iptables_backend)
        nft = self._nft or Nft()
        ref = f"inet {cfg.nftables_table_name}"
        try:
            nft.run(f"add table {ref}\ndelete table {ref}\n")
        except NftError as exc:
            log.warning("could not remove nftables table %s: %s", ref, exc)
        try:
            ipt.remove_other_variant(variant, cfg.iptables_lock_timeout_secs)
        except (DATAPLANE_ERRORS + (OSError,)) as exc:
            log.warning("could not clean the other iptables variant: %s", exc)
        dp_cfg = dataclasses.replace(dataplane_config(cfg), mark_mask=cfg.iptables_mark_mask)
        log.info("iptables data plane: backend %s (IptablesBackend=%s), chainInsertMode %s",
                 variant, cfg.iptables_backend, cfg.chain_insert_mode)
        return ipt.IptablesDataplane(dp_cfg, variant, cfg.chain_insert_mode, cfg.iptables_lock_timeout_secs)

    def _note_felix_config(self, u: Update) -> bool:
        key = u.key
        if not isinstance(key, ResourceKey) or key.kind != "FelixConfiguration":
            return False
        if key.name not in ("default", f"node.{self.hostname}"):
            return True
        if u.value is None:
            self._felix_configs.pop(key.name, None)
        else:
            self._felix_configs[key.name] = dict(u.value.get("spec") or {})
        return True

    def _resolve_config(self) -> FelixConfig:
        return load_config(self.env, self.config_file, self._felix_configs.get("default"),
                           self._felix_configs.get(f"node.{self.hostname}"))

    def _log_config(self) -> None:
        for name, source in sorted(self.config.sources.items()):
            if source != "default":
                log.info("config %s = %r (from %s)", name, self.config.get(name), source)

    # -- batches ---------------------------------------------------------------------------------

    def _process(self, updates: list[Update]) -> None:
        assert self.graph is not None
        t0 = time.perf_counter()
        if any([self._note_felix_config(u) for u in updates]):
            self._config_changed()
        self.graph.on_updates(updates)
        if self.flowlogs is not None:
            self.flowlogs.on_updates(updates)
        self.graph.flush()
        self.metrics.calc_time.observe(time.perf_counter() - t0)
        for u in updates:
            if u.revision.isdigit():
                self._seen_revision = max(self._seen_revision, int(u.revision))
        self.metrics.local_endpoints.set(self.graph.local_endpoint_count)
        self.metrics.local_policies.set(self.graph.active_policy_count)
        if self.dataplane is not None and not self.dataplane.dirty:
            self._mark_applied()

    def _config_changed(self) -> None:
        new = self._resolve_config()
        changed = self.config.differences(new)
        if not changed:
            return
        self.config = new
        restart = sorted(set(changed) - DYNAMIC_PARAMS)
        for name, (old, value) in sorted(changed.items()):
            log.info("config %s changed: %r -> %r", name, old, value)
        if restart:
            log.warning("changed parameters %s take effect when Felix restarts", ", ".join(restart))
        if {"LogSeverityScreen", "LogSeverityFile"} & set(changed):
            from felix.main import set_log_levels

            set_log_levels(new)
        if self.dataplane is not None:
            self.dataplane.reconfigure(dataplane_config(new))

    def _mark_applied(self) -> None:
        self.applied_revision = self._seen_revision
        self.metrics.applied_revision.set(self.applied_revision)

    def _apply(self) -> None:
        assert self.dataplane is not None
        t0 = time.perf_counter()
        try:
            ran = self.dataplane.apply()
        except DATAPLANE_ERRORS as exc:
            self._apply_failures += 1
            self.metrics.apply_failures.inc()
            self._retry_at = time.monotonic() + self._backoff
            log.error("dataplane update failed (attempt %d; full rewrite in %.1fs): %s\n%s",
                      self._apply_failures, self._backoff, exc, _excerpt(exc.script))
            self._backoff = min(self._backoff * 2, 10.0)
            return
        elapsed = time.perf_counter() - t0
        if ran:
            self.metrics.apply_time.observe(elapsed)
            log.debug("dataplane updated in %.1f ms", elapsed * 1000)
        self._apply_failures = 0
        self._retry_at = None
        self._backoff = 0.2
        self._mark_applied()
        if not self.first_apply_done.is_set():
            self.first_apply_done.set()
            log.info("dataplane programmed: %d local endpoints, %d active policies (%.0f ms)",
                     self.graph.local_endpoint_count if self.graph else 0,
                     self.graph.active_policy_count if self.graph else 0, elapsed * 1000)

    def _apply_routes(self, full: bool) -> None:
        assert self.routes is not None
        for repair in self.routes.apply(full=full):
            (log.warning if full else log.debug)("routes: %s", repair)
            if full:
                self.metrics.repairs.inc()

    def _verify(self) -> None:
        assert self.dataplane is not None
        try:
            problems = self.dataplane.verify()
        except (*DATAPLANE_ERRORS, ValueError) as exc:
            log.warning("could not read back %s: %s", self._dp_name(), exc)
            return
        if problems:
            self.metrics.repairs.inc(len(problems))
            shown = "; ".join(problems[:10]) + (f"; ... ({len(problems)} in all)" if len(problems) > 10 else "")
            log.warning("dataplane drifted, repairing: %s", shown)


def _flow_log_kinds(cfg: FelixConfig) -> tuple[str, ...]:
    """Staged policies are watched only for flow logs (they are never programmed)."""
    if not cfg.flow_logs_file_enabled:
        return ()
    from felix.calc.evaluate import STAGED_KINDS

    return STAGED_KINDS


def _excerpt(script: str, lines: int = 20) -> str:
    parts = script.splitlines()
    if len(parts) <= lines:
        return script
    return "\n".join(parts[:lines]) + f"\n... ({len(parts)} lines)"
