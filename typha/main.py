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
LIVENESS_TIMEOUT = 30.0


class Typha:
    def __init__(self, cfg: TyphaConfig, backend: Any) -> None:
        self.cfg = cfg
        self.backend = backend
        self.metrics = Metrics()
        self.heartbeat = time.monotonic()
        self.cache: SnapshotCache | None = None
        self.server: SyncServer | None = None
        self.syncer: Syncer | None = None
        self._http: list[Any] = []
        self._stopped: asyncio.Event | None = None

    def _liveness(self) -> tuple[int, str]:
        ok = time.monotonic() - self.heartbeat < LIVENESS_TIMEOUT
        return (200, "ok\n") if ok else (503, "event loop stalled\n")

    def _readiness(self) -> tuple[int, str]:
        if self.cache is not None and self.cache.status == SyncStatus.IN_SYNC and self.server is not None:
            return 200, "ok\n"
        return 503, "not in sync with the datastore\n"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.cache = SnapshotCache(loop, proto.SYNCER_FELIX)

        def changed() -> None:
            assert self.cache is not None
            self.metrics.snapshot_size = len(self.cache.kvs)
            self.metrics.breadcrumb_revision = int(self.cache.revision)

        self.cache.on_change = changed
        self.server = SyncServer(self.cfg, self.cache, self.metrics)
        await self.server.start()
        if self.cfg.health_enabled:
            self._http.append(http.serve(self.cfg.health_host, self.cfg.health_port,
                                         {"/liveness": self._liveness, "/readiness": self._readiness}))
        if self.cfg.prometheus_metrics_enabled:
            self._http.append(http.serve(self.cfg.prometheus_metrics_host, self.cfg.prometheus_metrics_port,
                                         {"/metrics": lambda: (200, self.metrics.render())}))
        self.syncer = Syncer(self.backend, [ListOptions(k) for k in FELIX_KINDS],
                             self.cache.feed, self.cache.feed_status).start()
        try:
            while not self._stopped.is_set():
                self.heartbeat = time.monotonic()
                try:
                    await asyncio.wait_for(self._stopped.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            await self.server.drain(self.cfg.shutdown_timeout_secs)
            await self.server.stop()
            await loop.run_in_executor(None, self.syncer.stop)
            for srv in self._http:
                srv.shutdown()
                srv.server_close()

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
