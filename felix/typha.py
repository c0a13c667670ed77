"""Where Felix gets its datastore updates: Typha when configured, else the datastore.

Both sources have the same interface (``on_updates`` / ``on_status``,
``start()`` / ``stop()``) and deliver the same keys and values, so the
calculation layer cannot tell them apart.

Settings (upstream names, local only: environment ``FELIX_<NAME>`` or the
config file): ``TyphaAddr`` (host:port, several comma-separated) wins; else
``TyphaK8sServiceName`` (+ ``TyphaK8sNamespace``, default ``kube-system``)
finds Typha through the Service's EndpointSlices (port ``calico-typha``; this
node's Typhas first, then the others, each group shuffled: see
:mod:`typha.discovery`); TLS via ``TyphaCAFile``, ``TyphaCertFile``,
``TyphaKeyFile``, ``TyphaCN``, ``TyphaURISAN``; ``TyphaReadTimeout`` (s, 30).

With Typha configured Felix never reads the datastore directly (that would be
the load Typha exists to remove): if no Typha can be found it logs why and
keeps looking, staying not-ready.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from datastore.backend import Backend
from datastore.keys import ListOptions
from datastore.syncer import OnStatus, OnUpdates, Syncer

log = logging.getLogger(__name__)


def kube_api_factory(backend: Backend, env: Mapping[str, str]) -> Callable[[], Any]:
    """The Kubernetes API for Service discovery: the Kubernetes datastore's own
    (stdlib HTTP) transport, or one built from ``KUBECONFIG`` / in-cluster credentials."""

    def make() -> Any:
        api = getattr(backend, "api", None)
        if api is not None and hasattr(api, "request"):
            return api
        from datastore.kubernetes.backend import make_transport

        kubeconfig = env.get("CALICO_KUBECONFIG") or env.get("KUBECONFIG") or None
        return make_transport(kubeconfig, env.get("K8S_API_ENDPOINT") or None, 10.0, "http")

    return make


def make_syncer(env: Mapping[str, str], node: str, backend: Backend, options: list[ListOptions],
                on_updates: OnUpdates, on_status: OnStatus, syncer_type: str = "felix") -> Any:
    """A datastore Syncer over ``options``, or a TyphaSyncer when Typha is configured.

    ``syncer_type="bgp"`` is confd's view (same ``FELIX_TYPHA*`` settings, as in
    calico-node): Typha's bgp cache, with other nodes' block affinities dropped
    (confd watches only its own node's)."""
    from felix.config import load_config

    cfg = load_config(env=env)
    addr = cfg.get("TyphaAddr")
    service = cfg.get("TyphaK8sServiceName")
    if not addr and not service:
        return Syncer(backend, options, on_updates, on_status)
    from typha.client import TyphaSyncer
    from typha.discovery import AddressTracker, ServiceDiscoverer, StaticDiscoverer

    if addr:
        discoverer: Any = StaticDiscoverer(addr)
        log.info("using Typha at %s", addr)
    else:
        discoverer = ServiceDiscoverer(kube_api_factory(backend, env), service,
                                       cfg.get("TyphaK8sNamespace"), node)
        log.info("using Typha, discovered through %s", discoverer.describe())
    return TyphaSyncer(
        AddressTracker(discoverer), node, on_updates, on_status,
        ca_file=cfg.get("TyphaCAFile"), cert_file=cfg.get("TyphaCertFile"),
        key_file=cfg.get("TyphaKeyFile"), server_cn=cfg.get("TyphaCN"),
        server_uri_san=cfg.get("TyphaURISAN"), read_timeout=float(cfg.get("TyphaReadTimeout")),
        syncer_type=syncer_type, key_filter=own_affinities_only(node) if syncer_type == "bgp" else None,
    )


def own_affinities_only(node: str) -> Callable[[Any], bool]:
    from datastore.keys import BlockAffinityKey

    return lambda key: not isinstance(key, BlockAffinityKey) or key.host == node
