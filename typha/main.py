"""calico-typha: one datastore syncer, an in-memory snapshot, a fan-out server."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import Any

from datastore.keys import ListOptions
from datastore.syncer import SyncStatus, Syncer
from typha import http, proto
from typha.cache import SnapshotCache
from typha.config import TyphaConfig
from typha.metrics import Metrics
from typha.server import SyncServer

log = logging.getLogger("typha")

# The kinds Felix's calculation layer consumes (same set as felix.daemon.WATCHED_KINDS).
FELIX_KINDS = (
    "FelixConfiguration", "Tier", "Profile", "GlobalNetworkPolicy", "NetworkPolicy",
    "GlobalNetworkSet", "NetworkSet", "IPPool", "WorkloadEndpoint",
)
# What confd renders BIRD's config from (bird.state.WATCHED_KINDS, every node's
# block affinities: each confd keeps its own node's).
BGP_KINDS = ("Node", "BGPConfiguration", "BGPPeer", "IPPool", "BlockAffinity")
SYNCER_KINDS = {proto.SYNCER_FELIX: FELIX_KINDS, proto.SYNCER_BGP: BGP_KINDS}
LIVENESS_TIMEOUT = 30.0


class Typha:
    def __init__(self, cfg: TyphaConfig, backend: Any) -> None:
        self.cfg = cfg
        self.backend = backend
        self.metrics = Metrics()
        self.heartbeat = time.monotonic()
        self.cache: SnapshotCache | None = None  # the felix one
        self.caches: dict[str, SnapshotCache] = {}
        self.server: SyncServer | None = None
        self.syncers: list[Syncer] = []
        self._http: list[Any] = []
        self._stopped: asyncio.Event | None = None

    def _liveness(self) -> tuple[int, str]:
        ok = time.monotonic() - self.heartbeat < LIVENESS_TIMEOUT
        return (200, "ok\n") if ok else (503, "event loop stalled\n")

    def _readiness(self) -> tuple[int, str]:
        if self.caches and self.server is not None and all(
                c.status == SyncStatus.IN_SYNC for c in self.caches.values()):
            return 200, "ok\n"
        return 503, "not in sync with the datastore\n"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.caches = {t: SnapshotCache(loop, t) for t in SYNCER_KINDS}
        self.cache = self.caches[proto.SYNCER_FELIX]

        def changed() -> None:
            assert self.cache is not None
            self.metrics.snapshot_size = len(self.cache.kvs)
            self.metrics.breadcrumb_revision = int(self.cache.revision)

        self.cache.on_change = changed
        self.server = SyncServer(self.cfg, self.caches, self.metrics)
        await self.server.start()
        rebalancer: asyncio.Task[None] | None = None
        if self.cfg.connection_rebalancing_mode == "kubernetes":
            from typha import rebalance

            rebalancer = asyncio.ensure_future(rebalance.poll(
                self._kube_api, self.cfg, len(self.caches), self.server.set_max_conns, self.metrics))
        if self.cfg.health_enabled:
            self._http.append(http.serve(self.cfg.health_host, self.cfg.health_port,
                                         {"/liveness": self._liveness, "/readiness": self._readiness}))
        if self.cfg.prometheus_metrics_enabled:
            self._http.append(http.serve(self.cfg.prometheus_metrics_host, self.cfg.prometheus_metrics_port,
                                         {"/metrics": lambda: (200, self.metrics.render())}))
        for syncer_type, kinds in SYNCER_KINDS.items():
            cache = self.caches[syncer_type]
            self.syncers.append(Syncer(self.backend, [ListOptions(k) for k in kinds],
                                       cache.feed, cache.feed_status).start())
        try:
            while not self._stopped.is_set():
                self.heartbeat = time.monotonic()
                try:
                    await asyncio.wait_for(self._stopped.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            if rebalancer is not None:
                rebalancer.cancel()
            await self.server.drain(self.cfg.shutdown_timeout_secs)
            await self.server.stop()
            for syncer in self.syncers:
                await loop.run_in_executor(None, syncer.stop)
            for srv in self._http:
                srv.shutdown()
                srv.server_close()

    def _kube_api(self) -> Any:
        """The Kubernetes API: the datastore's own connection in KDD mode, else
        the kubeconfig (``KUBECONFIG``) or in-cluster credentials."""
        api = getattr(self.backend, "api", None)
        if api is not None and hasattr(api, "request"):
            return api
        import os

        from datastore.kubernetes.backend import make_transport

        return make_transport(os.environ.get("KUBECONFIG") or None, None, 10.0, "http")

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()


def main() -> None:
    cfg = TyphaConfig.from_env()
    logging.basicConfig(level=getattr(logging, cfg.log_severity_screen.upper(), logging.INFO),
                        stream=sys.stderr, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    from datastore.config import DatastoreConfig, connect

    try:
        backend = connect(DatastoreConfig.from_env())
    except ValueError as exc:
        log.error("cannot use the datastore: %s", exc)
        sys.exit(1)
    typha = Typha(cfg, backend)

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, typha.stop)
        await typha.run()

    asyncio.run(runner())


if __name__ == "__main__":
    main()
