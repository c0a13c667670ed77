"""Kubernetes connection rebalancing (``TYPHA_CONNECTIONREBALANCINGMODE=kubernetes``).

Every ``TYPHA_K8SSERVICEPOLLINTERVALSECS`` Typha counts the Typhas behind its
Service (ready endpoints with the ``TYPHA_K8SPORTNAME`` port, from the
EndpointSlices) and the cluster's nodes, computes upstream's target
(:func:`typha.config.rebalance_target`) and hands it to the server, which then
sheds one random connection per drop interval while above it. If either count
fails, the target goes back to the upper limit (as upstream: never shed on
guesswork).

Typhas are counted by distinct address (IP and port): upstream counts IPs,
which is the same thing for hostNetwork Typhas on one port, and lets tests run
several Typhas on one loopback address.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from datastore.errors import Unavailable
from datastore.kubernetes.endpoints import count_nodes, service_endpoints
from datastore.kubernetes.transport import ApiError
from typha.config import TyphaConfig, rebalance_target
from typha.metrics import Metrics

log = logging.getLogger(__name__)


def count_typhas(api: Any, cfg: TyphaConfig) -> int:
    eps = service_endpoints(api, cfg.k8s_namespace, cfg.k8s_service_name, cfg.k8s_port_name)
    return len({ep.addr for ep in eps if ep.ready})


def compute_target(api: Any, cfg: TyphaConfig, syncer_types: int, metrics: Metrics | None = None) -> tuple[int, str]:
    try:
        typhas = count_typhas(api, cfg)
        nodes = count_nodes(api)
    except (ApiError, Unavailable, OSError, ValueError) as exc:
        log.warning("cannot count Typhas/nodes for rebalancing: %s", exc)
        return cfg.max_connections_upper_limit, "error"
    if metrics is not None:
        metrics.typhas_seen, metrics.nodes_seen = typhas, nodes
    target = rebalance_target(cfg.max_connections_lower_limit, cfg.max_connections_upper_limit,
                              syncer_types, nodes, typhas)
    return target, f"{typhas} Typhas, {nodes} nodes, {syncer_types} syncer types"


async def poll(api_factory: Callable[[], Any], cfg: TyphaConfig, syncer_types: int,
               set_target: Callable[[int, str], None], metrics: Metrics | None = None) -> None:
    """Run until cancelled: poll the API, push each new target to ``set_target``."""
    loop = asyncio.get_running_loop()
    api: Any = None
    log.info("kubernetes rebalancing: polling %s/%s every %.0fs", cfg.k8s_namespace, cfg.k8s_service_name,
             cfg.k8s_service_poll_interval_secs)
    while True:
        if api is None:
            try:
                api = await loop.run_in_executor(None, api_factory)
            except (ValueError, OSError) as exc:
                log.warning("kubernetes rebalancing: no Kubernetes API (%s); not shedding", exc)
        if api is not None:
            target, why = await loop.run_in_executor(None, compute_target, api, cfg, syncer_types, metrics)
            set_target(target, why)
        await asyncio.sleep(cfg.k8s_service_poll_interval_secs)
