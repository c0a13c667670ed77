"""Find the API server and credentials: a kubeconfig file, or in-cluster.

Handles what Calico's own kubeconfigs use (the CNI installer writes one with a
ServiceAccount token): server + CA (file or inline data), bearer token (inline
or ``tokenFile``), client certificate/key (file or inline), and
``insecure-skip-tls-verify``. Anything else (``exec`` credential plugins,
``auth-provider``) is reported as :class:`UnsupportedKubeconfig`, and the
backend falls back to the kubernetes Python client, which implements them.

Stdlib + PyYAML only: this runs in every CNI exec.
"""
from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class UnsupportedKubeconfig(ValueError):
    """The kubeconfig needs something only the kubernetes client implements."""


@dataclass
class ClusterAuth:
    server: str  # https://host:port (no trailing slash)
    ca_file: str | None = None
    ca_data: str | None = None  # PEM text (inline certificate-authority-data: no temp file)
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    source: str = ""  # the kubeconfig path, or "in-cluster"
    _temp_files: list[str] = field(default_factory=list, repr=False)

    def bearer_token(self) -> str | None:
        if self.token_file:
            with open(self.token_file, encoding="utf-8") as f:
                return f.read().strip()
        return self.token

    def cleanup(self) -> None:
        for path in self._temp_files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._temp_files.clear()


def _inline(data: str, suffix: str, temp: list[str]) -> str:
    """Write base64 inline client cert/key data to a private temp file
    (``ssl.load_cert_chain`` wants paths); removed by ``cleanup()``."""
    fd, path = tempfile.mkstemp(prefix="pycalico-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data))
    temp.append(path)
    return path


def _resolve(base_dir: str, path: str | None) -> str | None:
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _named(items: list[dict[str, Any]] | None, name: str, what: str, source: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return dict(item.get(what) or {})
    raise ValueError(f"kubeconfig {source}: no {what} named {name!r}")


def load_kubeconfig(path: str, api_endpoint: str | None = None) -> ClusterAuth:
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    base = os.path.dirname(os.path.abspath(path))
    context_name = doc.get("current-context")
    contexts = doc.get("contexts") or []
    if context_name:
        context = _named(contexts, context_name, "context", path)
    elif len(contexts) == 1:
        context = dict(contexts[0].get("context") or {})
    else:
        raise ValueError(f"kubeconfig {path}: no current-context")
    cluster = _named(doc.get("clusters"), context.get("cluster", ""), "cluster", path)
    user: dict[str, Any] = {}
    if context.get("user"):
        user = _named(doc.get("users"), context["user"], "user", path)
    if user.get("exec") or user.get("auth-provider"):
        raise UnsupportedKubeconfig(f"kubeconfig {path}: exec/auth-provider credentials")
    temp: list[str] = []
    server = (api_endpoint or cluster.get("server") or "").rstrip("/")
    if not server:
        raise ValueError(f"kubeconfig {path}: cluster has no server")
    auth = ClusterAuth(server=server, source=path, _temp_files=temp)
    auth.insecure = bool(cluster.get("insecure-skip-tls-verify"))
    if cluster.get("certificate-authority-data"):
        auth.ca_data = base64.b64decode(cluster["certificate-authority-data"]).decode()
    else:
        auth.ca_file = _resolve(base, cluster.get("certificate-authority"))
    auth.token = user.get("token") or None
    auth.token_file = _resolve(base, user.get("tokenFile"))
    if user.get("client-certificate-data"):
        auth.cert_file = _inline(user["client-certificate-data"], ".crt", temp)
    else:
        auth.cert_file = _resolve(base, user.get("client-certificate"))
    if user.get("client-key-data"):
        auth.key_file = _inline(user["client-key-data"], ".key", temp)
    else:
        auth.key_file = _resolve(base, user.get("client-key"))
    if user.get("username") or user.get("password"):
        raise UnsupportedKubeconfig(f"kubeconfig {path}: basic auth is not supported")
    return auth


def in_cluster() -> ClusterAuth | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = os.path.join(IN_CLUSTER_DIR, "token")
    if not host or not os.path.exists(token):
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    ca = os.path.join(IN_CLUSTER_DIR, "ca.crt")
    return ClusterAuth(
        server=f"https://{host}:{port}",
        ca_file=ca if os.path.exists(ca) else None,
        token_file=token,
        source="in-cluster",
    )


def find_auth(kubeconfig: str | None, api_endpoint: str | None) -> ClusterAuth:
    """Upstream's order: explicit kubeconfig, then in-cluster config, then
    ``$KUBECONFIG`` / ``~/.kube/config``; ``k8s_api_endpoint`` overrides the server."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig, api_endpoint)
    auth = in_cluster()
    if auth is not None:
        if api_endpoint:
            auth.server = api_endpoint.rstrip("/")
        return auth
    for candidate in (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0],
                      os.path.expanduser("~/.kube/config")):
        if candidate and os.path.exists(candidate):
            return load_kubeconfig(candidate, api_endpoint)
    if api_endpoint:
        return ClusterAuth(server=api_endpoint.rstrip("/"), source="k8s_api_endpoint")
    raise ValueError("no kubeconfig configured and not running in a cluster")
