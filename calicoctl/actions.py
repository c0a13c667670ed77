"""Resource actions on a datastore backend, with upstream's semantics and error
texts (libcalico-go ``errors``, calicoctl ``resourcemgr``):

* create: metadata reduced to name, namespace, labels and annotations; the
  backend adds ``uid`` and ``creationTimestamp``.
* update (replace, the update half of apply, label): read, keep the stored
  metadata but take labels and annotations from the document, then a
  compare-and-swap on the revision read (or on the document's own
  ``resourceVersion`` when it has one; a stale one is a conflict).
* apply: create, falling back to update when the resource exists.
* ClusterInformation is read-only; Kubernetes network policies (``knp.default.``
  names) cannot be managed here.
* Kubernetes datastore: Nodes, Profiles and WorkloadEndpoints are views of
  native objects (Nodes, Namespaces/ServiceAccounts, Pods), and upstream's KDD
  clients refuse some operations on them (``operation Create is not supported
  on Profile(kns.x)``).  apply falls back to update when create is refused, as
  upstream's does, so ``apply`` of a Node updates the Kubernetes Node.
"""
from __future__ import annotations

import copy
import sys
import time
import uuid
from typing import Any

from datastore.backend import Backend
from datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound
from datastore.keys import ListOptions, ResourceKey
from datastore.kinds import API_VERSION

from calicoctl.printers import ResourceList
from calicoctl.resources import Item

Doc = dict[str, Any]
UPDATE_RETRIES = 5
KNP_PREFIX = "knp.default."
DEFAULT_TIER_ORDER = 1_000_000


class ActionError(Exception):
    """One resource's action failed; the text is upstream's."""

    def __init__(self, message: str, *, not_found: bool = False, exists: bool = False,
                 unsupported: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found
        self.exists = exists
        self.unsupported = unsupported


# Operations upstream's Kubernetes-datastore clients refuse (with the reason
# they give), per kind derived from native Kubernetes objects.
_PATCH_MODE = "unsupported PatchMode: patchModeUnspecified"
KDD_UNSUPPORTED: dict[str, dict[str, str]] = {
    "Node": {"Create": "", "Delete": ""},
    "Profile": {"Create": "", "Update": "", "Delete": ""},
    "WorkloadEndpoint": {"Create": _PATCH_MODE, "Update": _PATCH_MODE},
}


def is_kubernetes(backend: Backend) -> bool:
    module = sys.modules.get("datastore.kubernetes.backend")
    return module is not None and isinstance(backend, module.KubernetesBackend)


def key_of(item: Item) -> ResourceKey:
    return ResourceKey(item.kind, item.name, item.namespace)


def identifier(item: Item) -> str:
    ns = f"{item.namespace}/" if item.namespace else ""
    return f"{item.kind}({ns}{item.name})"


def _not_found(item: Item) -> ActionError:
    return ActionError(f"resource does not exist: {identifier(item)} with error: <nil>", not_found=True)


def _datastore_error(item: Item, e: DatastoreError) -> ActionError:
    if isinstance(e, NotFound):
        return _not_found(item)
    if isinstance(e, AlreadyExists):
        return ActionError(f"resource already exists: {identifier(item)}", exists=True)
    if isinstance(e, Conflict):
        return ActionError(f"update conflict: {identifier(item)}")
    return ActionError(str(e))


def _check_supported(item: Item, operation: str) -> None:
    if item.kind == "ClusterInformation":
        reason = ": resource is readonly" if operation == "apply" else ""
        raise ActionError(f"operation {operation} is not supported on ClusterInformation{reason}")
    if item.kind == "NetworkPolicy" and item.name.startswith(KNP_PREFIX):
        raise ActionError(
            f"operation {operation} is not supported on {identifier(item)}: "
            "kubernetes network policies must be managed through the kubernetes API"
        )


def _check_kdd(backend: Backend, item: Item, operation: str) -> None:
    """Upstream's ErrorOperationNotSupported for a native-backed kind in KDD."""
    if not is_kubernetes(backend):
        return
    refused = KDD_UNSUPPORTED.get(item.kind, {})
    if operation in refused:
        reason = f": {refused[operation]}" if refused[operation] else ""
        raise ActionError(f"operation {operation} is not supported on {identifier(item)}{reason}",
                          unsupported=True)


def _for_create(doc: Doc) -> Doc:
    out = copy.deepcopy(doc)
    meta = out.get("metadata", {})
    out["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return out


def _merge_for_update(stored: Doc, new: Doc) -> Doc:
    out = copy.deepcopy(new)
    meta = {k: v for k, v in stored.get("metadata", {}).items() if k not in ("labels", "annotations")}
    for k in ("labels", "annotations"):
        if new.get("metadata", {}).get(k):
            meta[k] = new["metadata"][k]
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


# --------------------------------------------------------------------------


def create(backend: Backend, item: Item) -> Doc:
    _check_supported(item, "create or apply")
    assert item.doc is not None
    if item.revision:
        raise ActionError(
            f"error with field Metadata.ResourceVersion = '{item.revision}' "
            "(field must not be set for a Create request)"
        )
    _check_kdd(backend, item, "Create")
    try:
        kv = backend.create(key_of(item), _for_create(item.doc))
    except DatastoreError as e:
        raise _datastore_error(item, e) from None
    return kv.value


def update(backend: Backend, item: Item) -> Doc:
    _check_supported(item, "apply or replace")
    assert item.doc is not None
    key = key_of(item)
    for attempt in range(UPDATE_RETRIES):
        try:
            current = backend.get(key)
        except DatastoreError as e:
            raise _datastore_error(item, e) from None
        if item.revision and item.revision != current.revision:
            # Upstream's text names only the resource ("Resource version ... is out of date" is internal).
            raise ActionError(f"update conflict: {identifier(item)}")
        _check_kdd(backend, item, "Update")
        try:
            kv = backend.update(key, _merge_for_update(current.value, item.doc), current.revision)
            return kv.value
        except Conflict:
            if item.revision or attempt == UPDATE_RETRIES - 1:
                raise ActionError(f"update conflict: {identifier(item)}") from None
            time.sleep(0.1)
        except DatastoreError as e:
            raise _datastore_error(item, e) from None
    raise ActionError(f"failed to update the resource: {identifier(item)}")  # pragma: no cover


def apply(backend: Backend, item: Item) -> Doc:
    if item.kind == "ClusterInformation":
        _check_supported(item, "apply")
    saved = item.revision
    item.revision = ""
    try:
        return create(backend, item)
    except ActionError as e:
        if not (e.exists or e.unsupported):
            raise
    finally:
        item.revision = saved
    return update(backend, item)


def delete(backend: Backend, item: Item) -> Doc:
    _check_supported(item, "delete")
    key = key_of(item)
    _check_kdd(backend, item, "Delete")  # upstream's refusal comes before any read
    try:
        current = backend.get(key)
        if item.revision and item.revision != current.revision:
            raise Conflict(key, item.revision, current.revision)
        backend.delete(key, item.revision or current.revision)
    except DatastoreError as e:
        raise _datastore_error(item, e) from None
    return current.value


def get(backend: Backend, item: Item) -> Doc:
    try:
        return backend.get(key_of(item)).value
    except DatastoreError as e:
        raise _datastore_error(item, e) from None


def get_or_list(backend: Backend, item: Item) -> Doc | ResourceList:
    if item.name:
        return get(backend, item)
    try:
        result = backend.list(ListOptions(kind=item.kind, namespace=item.namespace))
    except DatastoreError as e:
        raise ActionError(str(e)) from None
    items = [kv.value for kv in result.items]
    if item.kind == "Tier":
        items.sort(key=lambda d: (d.get("spec", {}).get("order") is None, d.get("spec", {}).get("order") or 0))
    return ResourceList(item.kind, items, result.revision)


def replace_raw(backend: Backend, item: Item, doc: Doc, revision: str) -> Doc:
    """Write ``doc`` (already complete, metadata included) over ``revision``."""
    _check_kdd(backend, item, "Update")
    try:
        return backend.update(key_of(item), doc, revision).value
    except DatastoreError as e:
        raise _datastore_error(item, e) from None


# --------------------------------------------------------------------------


def ensure_initialized(backend: Backend) -> None:
    """Like upstream's EnsureInitialized on write commands: the
    ClusterInformation singleton and the default tier exist.  Failures are
    ignored (the user may only be allowed to write some kinds)."""
    wanted = [
        (
            ResourceKey("ClusterInformation", "default"),
            {
                "apiVersion": API_VERSION,
                "kind": "ClusterInformation",
                "metadata": {"name": "default"},
                "spec": {"clusterGUID": uuid.uuid4().hex, "datastoreReady": True},
            },
        ),
        (
            ResourceKey("Tier", "default"),
            {
                "apiVersion": API_VERSION,
                "kind": "Tier",
                "metadata": {"name": "default"},
                "spec": {"defaultAction": "Deny", "order": DEFAULT_TIER_ORDER},
            },
        ),
    ]
    for key, value in wanted:
        try:
            backend.get(key)
        except NotFound:
            try:
                backend.create(key, value)
            except DatastoreError:
                pass
        except DatastoreError:
            return
