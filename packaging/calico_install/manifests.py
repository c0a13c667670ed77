"""Apply Calico's CRDs (and optionally its RBAC objects) to the API server.

For the Kubernetes datastore, before the conflist is written: the plugin's
first ADD reads ClusterInformation, IPPools and IPAM blocks, which exist only
once their CustomResourceDefinitions are established.

Create-or-update, idempotent: each object carries the hash of the manifest it
came from in the annotation ``projectcalico.org/manifest-hash``; an object
whose hash matches is left alone (a rerun writes nothing), a different one is
replaced (PUT guarded by its resourceVersion, retried on a conflict with a
concurrent installer), a missing one is created. Then every CRD is waited
for until the API server reports it ``Established``.

Talks to the API with the datastore's stdlib transport
(:mod:`datastore.kubernetes.transport`; the kubernetes client only for
kubeconfigs with exec / auth-provider credentials).
"""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from calico_install.errors import InstallError

log = logging.getLogger("install")

HASH_ANNOTATION = "projectcalico.org/manifest-hash"
CRDS_FILE = os.path.join("crds", "crds.yaml")
RBAC_GLOB = os.path.join("rbac", "*.yaml")
ESTABLISH_TIMEOUT = 60.0
API_TIMEOUT = 15.0

# kind -> (API group/version prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
}


def default_dir() -> str:
    """The bundle's ``manifests/`` when frozen, else the checkout's ``packaging/manifests``."""
    if getattr(sys, "frozen", False):
        return os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "manifests")
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests")


@dataclass
class Doc:
    obj: dict[str, Any]
    source: str  # the file it came from

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name"))

    @property
    def namespace(self) -> str | None:
        return (self.obj.get("metadata") or {}).get("namespace")

    @property
    def label(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name}"

    def collection(self) -> str:
        if self.kind not in KINDS:
            raise InstallError(f"{self.source}: cannot apply a {self.kind} (knows {', '.join(sorted(KINDS))})")
        prefix, plural, namespaced = KINDS[self.kind]
        if namespaced:
            if not self.namespace:
                raise InstallError(f"{self.source}: {self.kind} {self.name} has no namespace")
            return f"{prefix}/namespaces/{self.namespace}/{plural}"
        return f"{prefix}/{plural}"

    def path(self) -> str:
        return f"{self.collection()}/{self.name}"


def load(paths: list[str]) -> list[Doc]:
    import yaml

    docs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                items = list(yaml.safe_load_all(f))
        except OSError as exc:
            raise InstallError(f"cannot read manifest {path}: {exc.strerror}. Point --manifests-dir / "
                               "CALICO_MANIFESTS_DIR at a directory with crds/ and rbac/") from None
        except yaml.YAMLError as exc:
            raise InstallError(f"manifest {path} is not valid YAML: {exc}") from None
        docs += [Doc(item, path) for item in items if item]
    return docs


def manifest_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _with_hash(obj: dict[str, Any], digest: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: digest}
    return out


class Applier:
    def __init__(self, kubeconfig: str) -> None:
        from datastore.kubernetes.backend import make_transport

        self.kubeconfig = kubeconfig
        try:
            self.api = make_transport(kubeconfig, None, API_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise InstallError(f"cannot use kubeconfig {kubeconfig} to apply the CRDs: {exc}") from None

    def close(self) -> None:
        self.api.close()

    def _send(self, method: str, path: str, what: str, body: Any = None) -> dict[str, Any]:
        """One request; an unreachable server is an InstallError, an HTTP error an ApiError."""
        from datastore.errors import Unavailable

        try:
            return self.api.request(method, path, body=body)
        except Unavailable as exc:
            raise InstallError(f"cannot reach the Kubernetes API server {self.api.server} to apply {what} "
                               f"({exc.__cause__ or exc})") from None

    def _refusal(self, method: str, what: str, exc: Any) -> InstallError:
        verb = {"GET": "read", "POST": "create", "PUT": "update"}.get(method, method)
        text = (f"the Kubernetes API server {self.api.server} refused to {verb} {what}: "
                f"{exc.status} {exc.reason or 'Error'}: {exc.message}")
        if exc.status in (401, 403):
            text += (f". The credentials in {self.kubeconfig} may not manage cluster-wide objects: apply "
                     "crds/crds.yaml as a cluster admin (kubectl apply -f) and rerun with "
                     "APPLY_CRDS=false (--no-apply-crds), or run the installer with an admin kubeconfig")
        return InstallError(text)

    def apply(self, doc: Doc) -> bool:
        """Create or update one object; True when something was written."""
        from datastore.kubernetes.transport import ApiError

        digest = manifest_hash(doc.obj)
        body = _with_hash(doc.obj, digest)
        for _ in range(5):
            try:
                current = self._send("GET", doc.path(), doc.label)
            except ApiError as exc:
                if exc.status != 404:
                    raise self._refusal("GET", doc.label, exc) from None
                try:
                    self._send("POST", doc.collection(), doc.label, body)
                    return True
                except ApiError as exc:
                    if exc.status == 409:
                        continue  # another installer created it meanwhile: compare with theirs
                    raise self._refusal("POST", doc.label, exc) from None
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            if annotations.get(HASH_ANNOTATION) == digest:
                return False
            update = copy.deepcopy(body)
            update["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                self._send("PUT", doc.path(), doc.label, update)
                return True
            except ApiError as exc:
                if exc.status == 409:
                    continue  # changed since our read: read again
                raise self._refusal("PUT", doc.label, exc) from None
        raise InstallError(f"{doc.label} kept changing while the installer applied it; rerun the installer")

    def wait_established(self, names: list[str], timeout: float = ESTABLISH_TIMEOUT) -> None:
        from datastore.kubernetes.transport import ApiError

        pending = list(names)
        deadline = time.monotonic() + timeout
        conditions: dict[str, dict[str, Any]] = {}
        while pending:
            prefix = KINDS["CustomResourceDefinition"][0] + "/customresourcedefinitions/"
            still = []
            for name in pending:
                what = f"CustomResourceDefinition {name}"
                try:
                    crd = self._send("GET", prefix + name, what)
                except ApiError as exc:
                    raise self._refusal("GET", what, exc) from None
                conds = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
                conditions[name] = conds
                if (conds.get("Established") or {}).get("status") != "True":
                    still.append(name)
            pending = still
            if not pending:
                return
            if time.monotonic() > deadline:
                details = "; ".join(
                    f"{n}: " + ", ".join(f"{t}={c.get('status')} ({c.get('message', '')})"
                                         for t, c in conditions.get(n, {}).items()) or f"{n}: no conditions"
                    for n in pending)
                raise InstallError(f"{len(pending)} CRDs not established after {timeout:.0f}s: {details}")
            time.sleep(0.2)


def apply_all(kubeconfig: str, manifests_dir: str, rbac: bool) -> list[str]:
    """Apply the CRDs (and with ``rbac`` the RBAC manifests); returns what changed."""
    paths = [os.path.join(manifests_dir, CRDS_FILE)]
    if rbac:
        found = sorted(glob.glob(os.path.join(manifests_dir, RBAC_GLOB)))
        if not found:
            raise InstallError(f"no RBAC manifests in {os.path.join(manifests_dir, 'rbac')}")
        paths += found
    docs = load(paths)
    start = time.monotonic()
    applier = Applier(kubeconfig)
    try:
        changed = [doc.label for doc in docs if applier.apply(doc)]
        crds = [doc.name for doc in docs if doc.kind == "CustomResourceDefinition"]
        applier.wait_established(crds)
    finally:
        applier.close()
    log.info("manifests: %d objects applied from %s (%d changed, %d CRDs established) in %.1fs",
             len(docs), manifests_dir, len(changed), len(crds), time.monotonic() - start)
    return changed
