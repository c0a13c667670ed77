"""Finding Typha: an explicit address, or the ready endpoints of its Kubernetes Service.

Upstream's rules (typha/pkg/discovery):

* ``TyphaAddr`` (comma-separated here) wins over the Service.
* Otherwise the EndpointSlices of ``TyphaK8sServiceName`` in ``TyphaK8sNamespace``
  (default ``kube-system``) are read; only slices with the port named
  ``calico-typha`` count, and endpoints whose ``ready`` condition is false are
  skipped. Typhas on this node come first, then the others; each group is
  shuffled, so clients spread over the replicas.
* :class:`AddressTracker` walks that list across connection attempts: every
  attempt after the first re-reads the Service (so a client never spends long on
  Typhas that are going away), and returns the first address not tried yet; once
  all were tried it starts again from the top. After a successful connection
  only that address counts as tried, so when it is lost the next attempt goes to
  another Typha.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable, Protocol

from datastore.errors import Unavailable

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "kube-system"
DEFAULT_PORT_NAME = "calico-typha"


class NoTyphaError(Exception):
    """Typha is configured but no usable address could be found (yet)."""


@dataclass(frozen=True)
class TyphaAddr:
    addr: str  # host:port
    node: str | None = None


class Discoverer(Protocol):
    def load(self) -> list[TyphaAddr]: ...

    def describe(self) -> str: ...


class StaticDiscoverer:
    """``TyphaAddr``: one or more fixed addresses (in the order given)."""

    def __init__(self, addrs: str) -> None:
        self.addrs = [TyphaAddr(a.strip()) for a in addrs.split(",") if a.strip()]
        if not self.addrs:
            raise ValueError("empty TyphaAddr")

    def load(self) -> list[TyphaAddr]:
        return list(self.addrs)

    def describe(self) -> str:
        return ",".join(a.addr for a in self.addrs)


class ServiceDiscoverer:
    """The ready endpoints of a Kubernetes Service, local node first."""

    def __init__(self, api_factory: Callable[[], object], service: str, namespace: str = DEFAULT_NAMESPACE,
                 node: str = "", port_name: str = DEFAULT_PORT_NAME) -> None:
        self._api_factory = api_factory
        self._api: object | None = None
        self.service = service
        self.namespace = namespace or DEFAULT_NAMESPACE
        self.node = node
        self.port_name = port_name or DEFAULT_PORT_NAME
        self.lookups = 0

    def describe(self) -> str:
        return f"Service {self.namespace}/{self.service} (port {self.port_name})"

    def load(self) -> list[TyphaAddr]:
        from datastore.kubernetes.endpoints import service_endpoints
        from datastore.kubernetes.transport import ApiError

        if self._api is None:
            try:
                self._api = self._api_factory()
            except (ValueError, OSError) as exc:
                raise NoTyphaError(f"cannot reach the Kubernetes API to look up {self.describe()}: {exc}") from None
        self.lookups += 1
        try:
            endpoints = service_endpoints(self._api, self.namespace, self.service, self.port_name)  # type: ignore[arg-type]
        except ApiError as exc:
            raise NoTyphaError(f"cannot read the endpoints of {self.describe()}: {exc}") from None
        except Unavailable as exc:
            raise NoTyphaError(f"Kubernetes API unavailable while looking up {self.describe()}: {exc}") from None
        local: list[TyphaAddr] = []
        remote: list[TyphaAddr] = []
        seen: set[str] = set()
        for ep in endpoints:
            if not ep.ready or ep.addr in seen:
                continue
            seen.add(ep.addr)
            (local if self.node and ep.node == self.node else remote).append(TyphaAddr(ep.addr, ep.node))
        if not local and not remote:
            raise NoTyphaError(f"no ready Typha endpoints in {self.describe()}")
        random.shuffle(local)
        random.shuffle(remote)
        addrs = local + remote
        log.info("found ready Typhas in %s: %s", self.describe(), ", ".join(a.addr for a in addrs))
        return addrs


class AddressTracker:
    """Which Typha to try next (see the module docstring)."""

    def __init__(self, discoverer: Discoverer) -> None:
        self.discoverer = discoverer
        self._tried: set[str] = set()
        self._cached: list[TyphaAddr] | None = None

    def prime(self) -> list[TyphaAddr]:
        """Load the list once up front (the first attempt then uses it)."""
        self._cached = self.discoverer.load()
        return self._cached

    def next_addr(self) -> TyphaAddr:
        if self._cached is not None:
            addrs, self._cached = self._cached, None
        else:
            addrs = self.discoverer.load()
        for a in addrs:
            if a.addr not in self._tried:
                self._tried.add(a.addr)
                return a
        log.debug("tried every Typha address; starting again from the first")
        self._tried = {addrs[0].addr}
        return addrs[0]

    def connected(self, addr: TyphaAddr) -> None:
        """A session with ``addr`` worked: forget older failures."""
        self._tried = {addr.addr}
