"""How each datastore key maps onto Kubernetes API objects.

One :class:`Mapping` per family of keys. Each knows its API paths, converts
objects both ways, and implements the Backend operations with the API's
semantics: compare-and-swap via ``metadata.resourceVersion`` on PUT/PATCH,
guarded deletes via ``DeleteOptions.preconditions``, and upstream's soft
delete for IPAM objects (CAS-update ``deleted: true``, then delete with
UID + resourceVersion preconditions; readers treat ``deleted`` as absent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from datastore.backend import KVPair, ListResult
from datastore.errors import AlreadyExists, Conflict, NotFound
from datastore.keys import BlockAffinityKey, BlockKey, HandleKey, Key, ListOptions, ResourceKey
from datastore.kinds import kind_info
from datastore.kubernetes import crd, native
from datastore.kubernetes.errors import NotSupported, raise_for
from datastore.kubernetes.transport import JSON, MERGE_PATCH, STRATEGIC_MERGE_PATCH, ApiError, Transport

# A watch source: a collection path, extra query (label selector) and a
# converter from an API object to the (key, value) pairs it stands for.
Convert = Callable[[dict[str, Any]], list[tuple[Key, dict[str, Any]]]]


@dataclass
class Source:
    path: str
    query: dict[str, Any]
    convert: Convert
    accept: Callable[[Key], bool]


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class Mapping:
    def __init__(self, api: Transport) -> None:
        self.api = api

    # -- helpers for subclasses -------------------------------------------------------

    def _get(self, path: str, key: Key) -> dict[str, Any]:
        try:
            return self.api.request("GET", path)
        except ApiError as exc:
            raise_for(exc, key)

    def _list(self, path: str, key: object, query: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], str]:
        """Paged LIST; returns (items, list resourceVersion)."""
        items: list[dict[str, Any]] = []
        q = dict(query or {})
        q["limit"] = 500
        revision = ""
        while True:
            try:
                reply = self.api.request("GET", path, query=q)
            except ApiError as exc:
                raise_for(exc, key)
            items.extend(reply.get("items") or [])
            meta = reply.get("metadata") or {}
            revision = revision or str(meta.get("resourceVersion") or "")
            if not meta.get("continue"):
                return items, revision
            q = {"limit": 500, "continue": meta["continue"], **{k: v for k, v in (query or {}).items()
                                                                if k not in ("resourceVersion", "resourceVersionMatch")}}

    def _conflict(self, path: str, key: Key, expected: str | None) -> Conflict | NotFound:
        """After a 409 on an update: NotFound if the object is gone, else Conflict
        naming the revision the datastore has."""
        try:
            current = self.api.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return NotFound(key)
            return Conflict(key, expected, None)
        return Conflict(key, expected, _rv(current))

    def _delete(self, path: str, key: Key, revision: str | None, uid: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] | None = None
        pre: dict[str, str] = {}
        if revision:
            pre["resourceVersion"] = revision
        if uid:
            pre["uid"] = uid
        if pre:
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": pre}
        try:
            return self.api.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.status == 409 and revision:
                raise self._conflict(path, key, revision) from None
            raise_for(exc, key, revision)

    # -- interface --------------------------------------------------------------------

    def get(self, key: Key) -> KVPair:
        raise NotImplementedError

    def list(self, options: ListOptions) -> ListResult:
        raise NotImplementedError

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        raise NotSupported(f"create is not supported for {key} in the kubernetes datastore")

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        raise NotSupported(f"update is not supported for {key} in the kubernetes datastore")

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        raise NotSupported(f"apply is not supported for {key} in the kubernetes datastore")

    def delete(self, key: Key, revision: str | None = None) -> None:
        raise NotSupported(f"delete is not supported for {key} in the kubernetes datastore")

    def sources(self, options: ListOptions) -> list[Source]:
        raise NotImplementedError


def _name_filter(options: ListOptions) -> Callable[[Key], bool]:
    def accept(key: Key) -> bool:
        if isinstance(key, ResourceKey):
            if key.kind != kind_info(options.kind).name:
                return False
            if options.namespace and key.namespace != options.namespace:
                return False
            return key.name.startswith(options.name_prefix) and options.accepts_node(key)
        return True

    return accept


# -- Calico resources as CRs -------------------------------------------------------------


class CRDResources(Mapping):
    """v3 kinds stored one-to-one as ``crd.projectcalico.org/v1`` objects."""

    def __init__(self, api: Transport, kind: str) -> None:
        super().__init__(api)
        self.kind = kind
        self.crd = crd.RESOURCE_CRDS[kind]

    def _path(self, key: ResourceKey) -> str:
        return self.crd.path(key.name, key.namespace)

    def _kv(self, obj: dict[str, Any]) -> KVPair:
        value = crd.cr_to_resource(self.kind, obj)
        meta = value["metadata"]
        return KVPair(ResourceKey(self.kind, meta["name"], meta.get("namespace")), value, _rv(obj))

    def get(self, key: Key) -> KVPair:
        assert isinstance(key, ResourceKey)
        return self._kv(self._get(self._path(key), key))

    def list(self, options: ListOptions) -> ListResult:
        items, revision = self._list(self.crd.path(namespace=options.namespace), options)
        accept = _name_filter(options)
        out = [kv for kv in (self._kv(i) for i in items) if accept(kv.key)]
        return ListResult(out, revision)

    def _body(self, key: ResourceKey, value: dict[str, Any], revision: str | None) -> dict[str, Any]:
        value = dict(value)
        meta = dict(value.get("metadata") or {})
        meta["name"] = key.name
        if key.namespace:
            meta["namespace"] = key.namespace
        value["metadata"] = meta
        return crd.resource_to_cr(self.crd, value, revision)

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        assert isinstance(key, ResourceKey)
        body = self._body(key, value, None)
        body["metadata"].pop("uid", None)
        try:
            return self._kv(self.api.request("POST", self.crd.path(namespace=key.namespace), body=body))
        except ApiError as exc:
            if exc.status == 409:
                raise AlreadyExists(key) from None
            raise_for(exc, key)

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        assert isinstance(key, ResourceKey)
        if not revision:
            raise ValueError(f"update of {key} needs the revision it was read at")
        path = self._path(key)
        try:
            return self._kv(self.api.request("PUT", path, body=self._body(key, value, revision)))
        except ApiError as exc:
            if exc.status == 409:
                raise self._conflict(path, key, revision) from None
            raise_for(exc, key, revision)

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        assert isinstance(key, ResourceKey)
        for _ in range(10):
            try:
                current = self.get(key)
            except NotFound:
                try:
                    return self.create(key, value)
                except AlreadyExists:
                    continue
            merged = dict(value)
            meta = dict(merged.get("metadata") or {})
            old = current.value.get("metadata") or {}
            for field in ("uid", "creationTimestamp"):
                if old.get(field) and not meta.get(field):
                    meta[field] = old[field]
            merged["metadata"] = meta
            try:
                return self.update(key, merged, current.revision)
            except (Conflict, NotFound):
                continue
        raise Conflict(key, None, None)

    def delete(self, key: Key, revision: str | None = None) -> None:
        assert isinstance(key, ResourceKey)
        self._delete(self._path(key), key, revision)

    def sources(self, options: ListOptions) -> list[Source]:
        def convert(obj: dict[str, Any]) -> list[tuple[Key, dict[str, Any]]]:
            kv = self._kv(obj)
            return [(kv.key, kv.value)]

        return [Source(self.crd.path(namespace=options.namespace), {}, convert, _name_filter(options))]


# -- Pods as WorkloadEndpoints -------------------------------------------------------------


class WorkloadEndpoints(Mapping):
    def _pod_path(self, namespace: str | None, pod: str | None = None, sub: str = "") -> str:
        ns = f"/namespaces/{namespace}" if namespace else ""
        name = f"/{pod}" if pod else ""
        return f"/api/v1{ns}/pods{name}{sub}"

    @staticmethod
    def _kv(pod: dict[str, Any]) -> KVPair:
        wep = native.pod_to_wep(pod)
        meta = wep["metadata"]
        return KVPair(ResourceKey("WorkloadEndpoint", meta["name"], meta["namespace"]), wep, _rv(pod))

    def _pod_name(self, key: ResourceKey) -> str:
        try:
            return native.pod_of_wep(key.name)
        except native.NotConvertible as exc:
            raise NotSupported(str(exc)) from None

    def get(self, key: Key) -> KVPair:
        assert isinstance(key, ResourceKey)
        try:
            pod_name = native.pod_of_wep(key.name)
        except native.NotConvertible:
            raise NotFound(key) from None
        pod = self._get(self._pod_path(key.namespace, pod_name), key)
        if not native.is_calico_pod(pod):
            raise NotFound(key)
        kv = self._kv(pod)
        if kv.key != key:
            raise NotFound(key)  # e.g. the name's node is not the pod's node
        return kv

    @staticmethod
    def _node_query(options: ListOptions) -> dict[str, Any]:
        """``ListOptions.node``: one node's pods only, selected by the API server."""
        return {"fieldSelector": f"spec.nodeName={options.node}"} if options.node else {}

    def list(self, options: ListOptions) -> ListResult:
        items, revision = self._list(self._pod_path(options.namespace), options, self._node_query(options))
        accept = _name_filter(options)
        out = [kv for kv in (self._kv(p) for p in items if native.is_calico_pod(p)) if accept(kv.key)]
        return ListResult(out, revision)

    def _patch(self, key: ResourceKey, annotations: dict[str, Any], revision: str | None) -> KVPair:
        """Strategic-merge PATCH of the pod's status subresource (which may
        change metadata.annotations): the CNI plugin's WorkloadEndpoint write."""
        meta: dict[str, Any] = {"annotations": annotations}
        if revision:
            meta["resourceVersion"] = revision
        path = self._pod_path(key.namespace, self._pod_name(key), "/status")
        try:
            pod = self.api.request("PATCH", path, body={"metadata": meta}, content_type=STRATEGIC_MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 409 and revision:
                raise self._conflict(self._pod_path(key.namespace, self._pod_name(key)), key, revision) from None
            raise_for(exc, key, revision)
        return self._kv(pod)

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        assert isinstance(key, ResourceKey)
        return self._patch(key, native.wep_annotations(value), None)

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        return self.create(key, value)

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        assert isinstance(key, ResourceKey)
        return self._patch(key, native.wep_annotations(value), revision)

    def delete(self, key: Key, revision: str | None = None) -> None:
        """Upstream: blank podIP/podIPs (keep containerID, so a repeated DEL can
        tell which sandbox it is looking at)."""
        assert isinstance(key, ResourceKey)
        self._patch(key, {native.ANNOTATION_POD_IP: "", native.ANNOTATION_POD_IPS: ""}, revision)

    def sources(self, options: ListOptions) -> list[Source]:
        def convert(pod: dict[str, Any]) -> list[tuple[Key, dict[str, Any]]]:
            if not native.is_calico_pod(pod):
                return []
            kv = self._kv(pod)
            return [(kv.key, kv.value)]

        return [Source(self._pod_path(options.namespace), self._node_query(options), convert,
                       _name_filter(options))]


# -- Namespaces and ServiceAccounts as Profiles ------------------------------------------


class Profiles(Mapping):
    @staticmethod
    def _ns_kv(ns: dict[str, Any]) -> KVPair:
        value = native.namespace_to_profile(ns)
        return KVPair(ResourceKey("Profile", value["metadata"]["name"]), value, _rv(ns))

    @staticmethod
    def _sa_kv(sa: dict[str, Any]) -> KVPair:
        value = native.service_account_to_profile(sa)
        return KVPair(ResourceKey("Profile", value["metadata"]["name"]), value, _rv(sa))

    def get(self, key: Key) -> KVPair:
        assert isinstance(key, ResourceKey)
        try:
            what, ident = native.parse_profile_name(key.name)
        except native.NotConvertible:
            raise NotFound(key) from None
        if what == "default":
            return KVPair(key, native.default_allow_profile(), "1")
        if what == "namespace":
            return self._ns_kv(self._get(f"/api/v1/namespaces/{ident}", key))
        assert ident is not None
        ns, _, sa = ident.partition("/")
        return self._sa_kv(self._get(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}", key))

    def list(self, options: ListOptions) -> ListResult:
        namespaces, revision = self._list("/api/v1/namespaces", options)
        accounts, _ = self._list("/api/v1/serviceaccounts", options,
                                 {"resourceVersion": revision, "resourceVersionMatch": "Exact"})
        accept = _name_filter(options)
        items = [KVPair(ResourceKey("Profile", native.DEFAULT_ALLOW_PROFILE), native.default_allow_profile(), "1")]
        items += [self._ns_kv(n) for n in namespaces] + [self._sa_kv(s) for s in accounts]
        return ListResult([kv for kv in items if accept(kv.key)], revision)

    def sources(self, options: ListOptions) -> list[Source]:
        accept = _name_filter(options)
        return [
            Source("/api/v1/namespaces", {}, lambda o: [(self._ns_kv(o).key, self._ns_kv(o).value)], accept),
            Source("/api/v1/serviceaccounts", {}, lambda o: [(self._sa_kv(o).key, self._sa_kv(o).value)], accept),
        ]

    def _read_only(self, key: Key) -> NotSupported:
        return NotSupported(
            f"{key}: profiles are read-only in the kubernetes datastore "
            "(they mirror Namespaces as kns.<name> and ServiceAccounts as ksa.<namespace>.<name>)"
        )

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        raise self._read_only(key)

    update = apply = create  # type: ignore[assignment]

    def delete(self, key: Key, revision: str | None = None) -> None:
        raise self._read_only(key)


# -- NetworkPolicy: Calico CRs plus converted Kubernetes NetworkPolicies --------------------


class NetworkPolicies(CRDResources):
    def __init__(self, api: Transport) -> None:
        super().__init__(api, "NetworkPolicy")

    @staticmethod
    def _knp_kv(knp: dict[str, Any]) -> KVPair:
        value = native.k8s_policy_to_policy(knp)
        meta = value["metadata"]
        return KVPair(ResourceKey("NetworkPolicy", meta["name"], meta["namespace"]), value, _rv(knp))

    @staticmethod
    def _knp_path(namespace: str | None, name: str | None = None) -> str:
        ns = f"/namespaces/{namespace}" if namespace else ""
        tail = f"/{name}" if name else ""
        return f"/apis/networking.k8s.io/v1{ns}/networkpolicies{tail}"

    @staticmethod
    def _is_knp(key: Key) -> bool:
        return isinstance(key, ResourceKey) and key.name.startswith(native.K8S_POLICY_PREFIX)

    def get(self, key: Key) -> KVPair:
        assert isinstance(key, ResourceKey)
        if self._is_knp(key):
            name = key.name[len(native.K8S_POLICY_PREFIX):]
            return self._knp_kv(self._get(self._knp_path(key.namespace, name), key))
        return super().get(key)

    def list(self, options: ListOptions) -> ListResult:
        result = super().list(options)
        knps, _ = self._list(self._knp_path(options.namespace), options,
                             {"resourceVersion": result.revision, "resourceVersionMatch": "Exact"})
        accept = _name_filter(options)
        result.items += [kv for kv in (self._knp_kv(k) for k in knps) if accept(kv.key)]
        return result

    def sources(self, options: ListOptions) -> list[Source]:
        knp = Source(self._knp_path(options.namespace), {},
                     lambda o: [(self._knp_kv(o).key, self._knp_kv(o).value)], _name_filter(options))
        return super().sources(options) + [knp]

    def _check_writable(self, key: Key) -> None:
        if self._is_knp(key):
            raise NotSupported(f"{key} mirrors a Kubernetes NetworkPolicy: change that instead")

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        self._check_writable(key)
        return super().create(key, value)

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        self._check_writable(key)
        return super().update(key, value, revision)

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        self._check_writable(key)
        return super().apply(key, value)

    def delete(self, key: Key, revision: str | None = None) -> None:
        self._check_writable(key)
        super().delete(key, revision)


# -- Nodes ---------------------------------------------------------------------------------


class Nodes(Mapping):
    @staticmethod
    def _kv(node: dict[str, Any]) -> KVPair:
        value = native.k8s_node_to_node(node)
        return KVPair(ResourceKey("Node", value["metadata"]["name"]), value, _rv(node))

    def get(self, key: Key) -> KVPair:
        assert isinstance(key, ResourceKey)
        return self._kv(self._get(f"/api/v1/nodes/{key.name}", key))

    def list(self, options: ListOptions) -> ListResult:
        items, revision = self._list("/api/v1/nodes", options)
        accept = _name_filter(options)
        return ListResult([kv for kv in (self._kv(n) for n in items) if accept(kv.key)], revision)

    def _patch(self, key: ResourceKey, value: dict[str, Any], revision: str | None) -> KVPair:
        patch = native.node_annotation_patch(value)
        if revision:
            patch["metadata"]["resourceVersion"] = revision
        path = f"/api/v1/nodes/{key.name}"
        try:
            return self._kv(self.api.request("PATCH", path, body=patch, content_type=MERGE_PATCH))
        except ApiError as exc:
            if exc.status == 409 and revision:
                raise self._conflict(path, key, revision) from None
            raise_for(exc, key, revision)

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        """Kubelet creates Nodes in a cluster; this exists for tests and
        stand-alone hosts: a k8s Node carrying the Calico fields."""
        assert isinstance(key, ResourceKey)
        patch = native.node_annotation_patch(value)
        meta = patch["metadata"]
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if v is not None}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": key.name, **meta}}
        try:
            return self._kv(self.api.request("POST", "/api/v1/nodes", body=body))
        except ApiError as exc:
            if exc.status == 409:
                raise AlreadyExists(key) from None
            raise_for(exc, key)

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        assert isinstance(key, ResourceKey)
        return self._patch(key, value, revision)

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        assert isinstance(key, ResourceKey)
        try:
            return self._patch(key, value, None)
        except NotFound:
            return self.create(key, value)

    def delete(self, key: Key, revision: str | None = None) -> None:
        assert isinstance(key, ResourceKey)
        self._delete(f"/api/v1/nodes/{key.name}", key, revision)

    def sources(self, options: ListOptions) -> list[Source]:
        return [Source("/api/v1/nodes", {}, lambda o: [(self._kv(o).key, self._kv(o).value)],
                       _name_filter(options))]


# -- IPAM objects (soft delete) -----------------------------------------------------------


class SoftDeleted(Mapping):
    """IPAM CRs: blocks, affinities, handles. ``deleted`` objects read as absent."""

    crd_kind = ""

    @property
    def crd(self) -> crd.CRD:
        return crd.ALL_CRDS[self.crd_kind]

    # subclass hooks
    def name(self, key: Key) -> str:
        raise NotImplementedError

    def to_cr(self, key: Key, value: dict[str, Any], revision: str | None, uid: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def from_cr(self, cr: dict[str, Any]) -> tuple[Key, dict[str, Any]]:
        raise NotImplementedError

    def list_query(self, options: ListOptions) -> dict[str, Any]:
        return {}

    def accept(self, options: ListOptions) -> Callable[[Key], bool]:
        return lambda key: True

    # helpers
    def _kv(self, cr: dict[str, Any]) -> KVPair:
        key, value = self.from_cr(cr)
        return KVPair(key, value, _rv(cr))

    def _read(self, key: Key) -> dict[str, Any]:
        return self._get(self.crd.path(self.name(key)), key)

    @staticmethod
    def _is_deleted(value: dict[str, Any]) -> bool:
        return bool(value.get("deleted"))

    def _finish_delete(self, cr: dict[str, Any], key: Key) -> None:
        try:
            self._delete(self.crd.path(self.name(key)), key, _rv(cr), _uid(cr))
        except (NotFound, Conflict):
            pass

    # interface
    def get(self, key: Key) -> KVPair:
        cr = self._read(key)
        kv = self._kv(cr)
        if self._is_deleted(kv.value):
            self._finish_delete(cr, key)
            raise NotFound(key)
        return KVPair(key, kv.value, kv.revision)

    def list(self, options: ListOptions) -> ListResult:
        items, revision = self._list(self.crd.path(), options, self.list_query(options))
        accept = self.accept(options)
        out = []
        for cr in items:
            kv = self._kv(cr)
            if not self._is_deleted(kv.value) and accept(kv.key):
                out.append(kv)
        return ListResult(out, revision)

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        try:
            cr = self.api.request("POST", self.crd.path(), body=self.to_cr(key, value, None, None))
        except ApiError as exc:
            if exc.status == 409:
                # A soft-deleted leftover counts as absent: finish it and retry once.
                try:
                    existing = self._read(key)
                except NotFound:
                    existing = None
                if existing is not None and self._is_deleted(self._kv(existing).value):
                    self._finish_delete(existing, key)
                    return self.create(key, value)
                raise AlreadyExists(key) from None
            raise_for(exc, key)
        return KVPair(key, self._kv(cr).value, _rv(cr))

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        if not revision:
            raise ValueError(f"update of {key} needs the revision it was read at")
        path = self.crd.path(self.name(key))
        try:
            cr = self.api.request("PUT", path, body=self.to_cr(key, value, revision, None))
        except ApiError as exc:
            if exc.status == 409:
                raise self._conflict(path, key, revision) from None
            raise_for(exc, key, revision)
        return KVPair(key, self._kv(cr).value, _rv(cr))

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        for _ in range(10):
            try:
                current = self.api.request("GET", self.crd.path(self.name(key)))
            except ApiError as exc:
                if exc.status != 404:
                    raise_for(exc, key)
                try:
                    return self.create(key, value)
                except AlreadyExists:
                    continue
            try:
                return self.update(key, value, _rv(current))
            except (Conflict, NotFound):
                continue
        raise Conflict(key, None, None)

    deleted_marker: Any = True  # BlockAffinity stores the string "true"

    def delete(self, key: Key, revision: str | None = None) -> None:
        """Without compare-and-delete in the API: mark ``deleted`` with a merge
        patch guarded by ``revision`` (a CAS), then delete guarded by the UID
        and the marked revision. Two requests."""
        path = self.crd.path(self.name(key))
        patch: dict[str, Any] = {"spec": {"deleted": self.deleted_marker}}
        if revision:
            patch["metadata"] = {"resourceVersion": revision}
        try:
            marked = self.api.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 409 and revision:
                raise self._conflict(path, key, revision) from None
            raise_for(exc, key, revision)
        try:
            self._delete(path, key, _rv(marked), _uid(marked))
        except Conflict:
            # Changed after our mark: whoever changed it saw "deleted" and either
            # finished the delete or will; the object is gone for readers.
            pass

    def sources(self, options: ListOptions) -> list[Source]:
        def convert(cr: dict[str, Any]) -> list[tuple[Key, dict[str, Any]]]:
            key, value = self.from_cr(cr)
            return [] if self._is_deleted(value) else [(key, value)]

        return [Source(self.crd.path(), self.list_query(options), convert, self.accept(options))]


def _version_ok(cidr: str, options: ListOptions) -> bool:
    return not options.ip_version or crd.ip_version(cidr) == options.ip_version


class Blocks(SoftDeleted):
    crd_kind = "IPAMBlock"

    def name(self, key: Key) -> str:
        assert isinstance(key, BlockKey)
        return crd.cidr_to_name(key.cidr)

    def to_cr(self, key: Key, value: dict[str, Any], revision: str | None, uid: str | None) -> dict[str, Any]:
        assert isinstance(key, BlockKey)
        return crd.block_to_cr(key.cidr, value, revision, uid)

    def from_cr(self, cr: dict[str, Any]) -> tuple[Key, dict[str, Any]]:
        value = crd.cr_to_block(cr)
        return BlockKey(value["cidr"]), value

    def accept(self, options: ListOptions) -> Callable[[Key], bool]:
        return lambda key: isinstance(key, BlockKey) and _version_ok(key.cidr, options)


class Affinities(SoftDeleted):
    crd_kind = "BlockAffinity"
    deleted_marker = "true"

    def name(self, key: Key) -> str:
        assert isinstance(key, BlockAffinityKey)
        return crd.affinity_name(key.host, key.cidr)

    def to_cr(self, key: Key, value: dict[str, Any], revision: str | None, uid: str | None) -> dict[str, Any]:
        assert isinstance(key, BlockAffinityKey)
        return crd.affinity_to_cr(key.host, key.cidr, value or {}, revision, uid)

    def from_cr(self, cr: dict[str, Any]) -> tuple[Key, dict[str, Any]]:
        host, cidr, value = crd.cr_to_affinity(cr)
        return BlockAffinityKey(host, cidr), value

    def list_query(self, options: ListOptions) -> dict[str, Any]:
        labels = []
        if options.host:
            labels.append(f"{crd.LABEL_HOSTNAME_HASH}={crd.hostname_hash(options.host)}")
        if options.ip_version:
            labels.append(f"{crd.LABEL_IP_VERSION}={options.ip_version}")
        return {"labelSelector": ",".join(labels)} if labels else {}

    def accept(self, options: ListOptions) -> Callable[[Key], bool]:
        def ok(key: Key) -> bool:
            return (isinstance(key, BlockAffinityKey) and (not options.host or key.host == options.host)
                    and _version_ok(key.cidr, options))

        return ok


class Handles(SoftDeleted):
    crd_kind = "IPAMHandle"

    def name(self, key: Key) -> str:
        assert isinstance(key, HandleKey)
        return crd.handle_name(key.handle_id)

    def to_cr(self, key: Key, value: dict[str, Any], revision: str | None, uid: str | None) -> dict[str, Any]:
        assert isinstance(key, HandleKey)
        return crd.handle_to_cr(key.handle_id, value, revision, uid)

    def from_cr(self, cr: dict[str, Any]) -> tuple[Key, dict[str, Any]]:
        handle_id, value = crd.cr_to_handle(cr)
        return HandleKey(handle_id), value

    def get(self, key: Key) -> KVPair:
        kv = super().get(key)
        assert isinstance(key, HandleKey)
        return KVPair(key, kv.value, kv.revision)

    def accept(self, options: ListOptions) -> Callable[[Key], bool]:
        return lambda key: isinstance(key, HandleKey) and key.handle_id.startswith(options.name_prefix)


class IPAMConfigs(Mapping):
    """The etcd-style IPAM config key, stored in the ``ipamconfigs`` CR ``default``."""

    PATH = crd.ALL_CRDS["IPAMConfig"].path(crd.IPAM_CONFIG_NAME)

    def get(self, key: Key) -> KVPair:
        cr = self._get(self.PATH, key)
        return KVPair(key, crd.cr_to_ipam_config(cr), _rv(cr))

    def create(self, key: Key, value: dict[str, Any]) -> KVPair:
        try:
            cr = self.api.request("POST", crd.ALL_CRDS["IPAMConfig"].path(), body=crd.ipam_config_to_cr(value))
        except ApiError as exc:
            raise_for(exc, key)
        return KVPair(key, crd.cr_to_ipam_config(cr), _rv(cr))

    def update(self, key: Key, value: dict[str, Any], revision: str) -> KVPair:
        try:
            cr = self.api.request("PUT", self.PATH, body=crd.ipam_config_to_cr(value, revision))
        except ApiError as exc:
            if exc.status == 409:
                raise self._conflict(self.PATH, key, revision) from None
            raise_for(exc, key, revision)
        return KVPair(key, crd.cr_to_ipam_config(cr), _rv(cr))

    def apply(self, key: Key, value: dict[str, Any]) -> KVPair:
        for _ in range(10):
            try:
                current = self.get(key)
            except NotFound:
                try:
                    return self.create(key, value)
                except AlreadyExists:
                    continue
            try:
                return self.update(key, value, current.revision)
            except (Conflict, NotFound):
                continue
        raise Conflict(key, None, None)

    def delete(self, key: Key, revision: str | None = None) -> None:
        self._delete(self.PATH, key, revision)


JSON_CONTENT = JSON  # re-exported for callers that build raw requests
