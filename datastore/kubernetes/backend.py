""":class:`datastore.backend.Backend` over the Kubernetes API (upstream's "KDD").

Calico resources live in ``crd.projectcalico.org/v1`` CustomResources; pods,
namespaces, service accounts, Kubernetes network policies and nodes are read
(and, for pods and nodes, annotated) as the Calico resources they stand for.
Revisions are ``metadata.resourceVersion``; every revision-carrying write is
a compare-and-swap. See :mod:`datastore.kubernetes.mappings`.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from datastore.backend import KVPair, ListResult
from datastore.errors import Unavailable
from datastore.keys import BlockAffinityKey, BlockKey, HandleKey, IPAMConfigKey, Key, ListOptions, ResourceKey
from datastore.kinds import kind_info
from datastore.kubernetes import crd, mappings
from datastore.kubernetes.errors import NotSupported, raise_for
from datastore.kubernetes.kubeconfig import UnsupportedKubeconfig, find_auth
from datastore.kubernetes.transport import ApiError, HttpTransport, KubeClientTransport, Transport
from datastore.kubernetes.watch import KubeWatch

log = logging.getLogger(__name__)

TRANSPORT_ENV = "PYCALICO_K8S_TRANSPORT"  # "http" (default) or "kubernetes"


def make_transport(kubeconfig: str | None, api_endpoint: str | None, timeout: float,
                   prefer: str | None = None) -> Transport:
    prefer = prefer or os.environ.get(TRANSPORT_ENV) or "http"
    if prefer == "kubernetes":
        return KubeClientTransport(kubeconfig, api_endpoint, timeout)
    try:
        return HttpTransport(find_auth(kubeconfig, api_endpoint), timeout)
    except UnsupportedKubeconfig as exc:
        log.debug("%s: using the kubernetes client", exc)
        return KubeClientTransport(kubeconfig, api_endpoint, timeout)


class KubernetesBackend:
    """Backend for ``datastore_type: kubernetes``.

    ``KubernetesBackend(DatastoreConfig)`` as :func:`datastore.config.connect`
    builds it, or ``KubernetesBackend(kubeconfig="...")``.
    """

    # IPAMConfigKey and ResourceKey("IPAMConfiguration", "default") are the
    # same object here (the ipamconfigs CR "default"): reading one is enough.
    ipam_config_is_resource = True

    def __init__(self, config: Any = None, *, kubeconfig: str | None = None,
                 api_endpoint: str | None = None, timeout: float | None = None,
                 transport: Transport | str | None = None) -> None:
        if config is not None:
            kubeconfig = kubeconfig or getattr(config, "kubeconfig", None)
            api_endpoint = api_endpoint or getattr(config, "k8s_api_endpoint", None)
            timeout = timeout or getattr(config, "timeout", None)
        timeout = timeout or 5.0
        if transport is None or isinstance(transport, str):
            self.api: Transport = make_transport(kubeconfig, api_endpoint, timeout, transport)
        else:
            self.api = transport
        api = self.api
        self._resources: dict[str, mappings.Mapping] = {
            kind: mappings.CRDResources(api, kind) for kind in crd.RESOURCE_CRDS
        }
        self._resources["NetworkPolicy"] = mappings.NetworkPolicies(api)
        self._resources["WorkloadEndpoint"] = mappings.WorkloadEndpoints(api)
        self._resources["Profile"] = mappings.Profiles(api)
        self._resources["Node"] = mappings.Nodes(api)
        self._ipam: dict[str, mappings.Mapping] = {
            "Block": mappings.Blocks(api),
            "BlockAffinity": mappings.Affinities(api),
            "IPAMHandle": mappings.Handles(api),
            "IPAMConfig": mappings.IPAMConfigs(api),
        }

    @property
    def server(self) -> str:
        return self.api.server

    # -- dispatch ------------------------------------------------------------------

    def _for_key(self, key: Key) -> mappings.Mapping:
        if isinstance(key, ResourceKey):
            mapping = self._resources.get(key.kind)
            if mapping is None:
                raise NotSupported(f"{key.kind} is not stored in the kubernetes datastore")
            return mapping
        if isinstance(key, BlockKey):
            return self._ipam["Block"]
        if isinstance(key, BlockAffinityKey):
            return self._ipam["BlockAffinity"]
        if isinstance(key, HandleKey):
            return self._ipam["IPAMHandle"]
        if isinstance(key, IPAMConfigKey):
            return self._ipam["IPAMConfig"]
        raise TypeError(f"not a datastore key: {key!r}")

    def _for_options(self, options: ListOptions) -> mappings.Mapping:
        if options.kind in self._ipam and options.kind != "IPAMConfig":
            return self._ipam[options.kind]
        kind = kind_info(options.kind).name
        mapping = self._resources.get(kind)
        if mapping is None:
            raise NotSupported(f"{kind} is not stored in the kubernetes datastore")
        return mapping

    # -- Backend ---------------------------------------------------------------------

    def get(self, key: Key) -> KVPair:
        return self._for_key(key).get(key)

    def list(self, options: ListOptions) -> ListResult:
        return self._for_options(options).list(options)

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        return self._for_key(key).create(key, value)

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        return self._for_key(key).update(key, value, revision)

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        return self._for_key(key).apply(key, value)

    def delete(self, key: Key, revision: str | None = None) -> None:
        self._for_key(key).delete(key, revision)

    def watch(self, options: ListOptions | list[ListOptions], revision: str) -> KubeWatch:
        opts = options if isinstance(options, list) else [options]
        sources = []
        for o in opts:
            sources.extend(self._for_options(o).sources(o))
        return KubeWatch(self.api, sources, revision)

    def ping(self) -> None:
        try:
            self.api.request("GET", "/version")
        except ApiError as exc:
            if exc.status >= 500:
                raise Unavailable(f"Kubernetes API {self.server} is not healthy", exc) from None
            raise_for(exc, "ping")

    def current_revision(self) -> str:
        """The API's current resourceVersion (a cheap one-item list)."""
        try:
            reply = self.api.request("GET", crd.ALL_CRDS["ClusterInformation"].path(), query={"limit": 1})
        except ApiError as exc:
            raise_for(exc, "ClusterInformation")
        return str((reply.get("metadata") or {}).get("resourceVersion") or "")

    def close(self) -> None:
        self.api.close()
