"""A real kube-apiserver with its own etcd, on free loopback ports.

Built by ``scripts/build-kube-apiserver`` into ``$PYCALICO_CACHE/bin``. Runs
with the RBAC authorizer, a service-account signing key, client-certificate
authentication (an admin certificate in ``system:masters``), and an audit
log (JSON lines, metadata level) so tests can count API requests. Writes an
admin kubeconfig; :meth:`KubeApiServer.token_kubeconfig` writes one for a
ServiceAccount token.

Usable as a context manager and from the command line::

    python -m tests.support.kube_apiserver   # start, print the kubeconfig path, wait
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from tests.support.etcd_server import EtcdServer, free_port
from tests.support.process import stop_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("PYCALICO_CACHE", "/var/cache/pycalico")
APISERVER_BINARY = os.environ.get("PYCALICO_KUBE_APISERVER", os.path.join(CACHE, "bin", "kube-apiserver"))
CRD_DIR = os.path.join(REPO, "packaging", "manifests", "crds")
RBAC_DIR = os.path.join(REPO, "packaging", "manifests", "rbac")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Metadata-level audit of every request (no bodies): enough to count requests
# per verb and resource.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""


def available() -> bool:
    return os.access(APISERVER_BINARY, os.X_OK)


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: str) -> dict[str, str]:
    """CA, serving cert (127.0.0.1/localhost), admin client cert, SA key pair."""
    os.makedirs(directory, exist_ok=True)
    d = directory
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=pycalico-test-ca", cwd=d)
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "3650", "-extfile", "server.ext", cwd=d)
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "admin.key", "-out", "admin.csr",
             "-subj", "/O=system:masters/CN=pycalico-admin", cwd=d)
    _openssl("x509", "-req", "-in", "admin.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "admin.crt", "-days", "3650", "-extfile", "client.ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return {name: os.path.join(d, f"{name}") for name in
            ("ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key", "sa.key", "sa.pub")}


def _kubeconfig(server: str, ca: str, user: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pycalico", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": "pycalico", "user": name}}],
        "current-context": name,
    }


class KubeApiServer:
    def __init__(self, workdir: str | None = None, *, watch_cache: bool = True,
                 extra_args: list[str] | None = None) -> None:
        self.workdir = workdir or tempfile.mkdtemp(prefix="pycalico-kube-")
        self._own_dir = workdir is None
        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.etcd = EtcdServer(data_dir=os.path.join(self.workdir, "etcd"))
        self.pki: dict[str, str] = {}
        self.kubeconfig = os.path.join(self.workdir, "admin.kubeconfig")
        self.audit_log = os.path.join(self.workdir, "audit.log")
        self.log_path = os.path.join(self.workdir, "kube-apiserver.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.watch_cache = watch_cache
        self.extra_args = extra_args or []
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> "KubeApiServer":
        if not available():
            raise RuntimeError(f"{APISERVER_BINARY} not found: run scripts/build-kube-apiserver")
        if not self.pki:
            self.pki = make_pki(os.path.join(self.workdir, "pki"))
            with open(os.path.join(self.workdir, "audit-policy.yaml"), "w") as f:
                f.write(AUDIT_POLICY)
            with open(self.kubeconfig, "w") as f:
                json.dump(_kubeconfig(self.server, self.pki["ca.crt"],
                                      {"client-certificate": self.pki["admin.crt"],
                                       "client-key": self.pki["admin.key"]}, "admin"), f, indent=1)
        if self.etcd.proc is None:
            self.etcd.start()
        args = [
            APISERVER_BINARY,
            f"--etcd-servers={self.etcd.endpoint}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The kubernetes Service endpoint may not be a loopback address.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self.pki['server.crt']}",
            f"--tls-private-key-file={self.pki['server.key']}",
            f"--client-ca-file={self.pki['ca.crt']}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.pki['sa.pub']}",
            f"--service-account-signing-key-file={self.pki['sa.key']}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # No controller-manager creates "default" ServiceAccounts here.
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-policy-file={os.path.join(self.workdir, 'audit-policy.yaml')}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxbackup=1",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--v=1",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.tail_log())
            try:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready in {timeout}s ({last}); see {self.log_path}")

    def tail_log(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, grace=20)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        self.etcd.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "KubeApiServer":
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- admin API access (stdlib; tests use it for setup) -------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.pki["ca.crt"])
            ctx.load_cert_chain(self.pki["admin.crt"], self.pki["admin.key"])
            self._ssl = ctx
        return self._ssl

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=10) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def must(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201),
             content_type: str = "application/json") -> Any:
        status, reply = self.request(method, path, body, content_type)
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {reply}")
        return reply

    def apply_manifest(self, doc: dict[str, Any]) -> None:
        """Create or replace one object (enough for CRDs and RBAC objects)."""
        path = _collection_path(doc)
        name = doc["metadata"]["name"]
        status, current = self.request("GET", f"{path}/{name}")
        if status == 404:
            self.must("POST", path, doc)
            return
        doc = json.loads(json.dumps(doc))
        doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.must("PUT", f"{path}/{name}", doc)

    def apply_files(self, pattern: str) -> list[dict[str, Any]]:
        import yaml

        docs = []
        for path in sorted(glob.glob(pattern)):
            if os.path.basename(path) == "crds.yaml":
                continue
            with open(path) as f:
                for doc in yaml.safe_load_all(f):
                    if doc:
                        self.apply_manifest(doc)
                        docs.append(doc)
        return docs

    def install_crds(self, timeout: float = 60.0) -> None:
        docs = self.apply_files(os.path.join(CRD_DIR, "*.yaml"))
        deadline = time.monotonic() + timeout
        for doc in docs:
            name = doc["metadata"]["name"]
            while True:
                crd = self.must("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
                if conditions.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not established: {conditions}")
                time.sleep(0.1)

    def install_rbac(self) -> None:
        self.apply_files(os.path.join(RBAC_DIR, "*.yaml"))

    # -- namespaces, pods, service accounts ------------------------------------------------

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        self.must("POST", "/api/v1/namespaces", body, ok=(201, 409))

    def delete_namespace(self, name: str) -> None:
        """Namespaces need the namespace controller to finish; delete what we
        created in them (pods, service accounts) so nothing is left behind."""
        for res in ("pods", "serviceaccounts", "rolebindings"):
            group = "/apis/rbac.authorization.k8s.io/v1" if res == "rolebindings" else "/api/v1"
            self.request("DELETE", f"{group}/namespaces/{name}/{res}",
                         {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        status, ns = self.request("DELETE", f"/api/v1/namespaces/{name}")
        if status != 200 or not isinstance(ns, dict):
            return
        # No namespace controller runs here: finish the deletion ourselves.
        ns.setdefault("spec", {})["finalizers"] = []
        self.request("PUT", f"/api/v1/namespaces/{name}/finalize", ns)

    def create_pod(self, namespace: str, name: str, node: str, labels: dict[str, str] | None = None,
                   service_account: str = "default", host_network: bool = False) -> dict[str, Any]:
        self.ensure_namespace(namespace)
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "automountServiceAccountToken": False,
                "hostNetwork": host_network,
                "containers": [{"name": "c", "image": "busybox",
                                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}],
            },
        }
        status, reply = self.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
        if status == 409:
            return self.must("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        if status != 201:
            raise RuntimeError(f"create pod {namespace}/{name}: {status} {reply}")
        return reply

    def delete_pod(self, namespace: str, name: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                     {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})

    def create_service_account(self, namespace: str, name: str) -> None:
        self.ensure_namespace(namespace)
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        self.must("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body, ok=(201, 409))

    def request_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound ServiceAccount token via the TokenRequest API."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        reply = self.must("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        return str(reply["status"]["token"])

    def bind_cluster_role(self, role: str, namespace: str, service_account: str,
                          binding: str | None = None) -> str:
        binding = binding or f"{role}-{namespace}-{service_account}"
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        }
        self.apply_manifest(body)
        return binding

    def delete_cluster_role_binding(self, name: str) -> None:
        self.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")

    def token_kubeconfig(self, token: str, path: str) -> str:
        with open(path, "w") as f:
            json.dump(_kubeconfig(self.server, self.pki["ca.crt"], {"token": token}, "token"), f, indent=1)
        return path

    # -- audit log -----------------------------------------------------------------------

    def audit_offset(self) -> int:
        try:
            return os.path.getsize(self.audit_log)
        except OSError:
            return 0

    def audit_events(self, since: int = 0, user: str | None = None) -> list[dict[str, Any]]:
        """ResponseComplete audit events after byte offset ``since``."""
        events = []
        try:
            with open(self.audit_log, "rb") as f:
                f.seek(since)
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("stage") != "ResponseComplete":
                        continue
                    if user and (event.get("user") or {}).get("username") != user:
                        continue
                    events.append(event)
        except OSError:
            pass
        return events


def _collection_path(doc: dict[str, Any]) -> str:
    api_version = doc["apiVersion"]
    kind = doc["kind"]
    plural = {
        "CustomResourceDefinition": "customresourcedefinitions",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "ServiceAccount": "serviceaccounts",
        "Namespace": "namespaces",
    }[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = doc["metadata"].get("namespace")
    if ns and kind in ("Role", "RoleBinding", "ServiceAccount"):
        return f"{base}/namespaces/{ns}/{plural}"
    return f"{base}/{plural}"


def describe(event: dict[str, Any]) -> str:
    """``verb resource[/subresource]`` of an audit event."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource") or event.get("requestURI", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return f"{event.get('verb')} {resource}"


if __name__ == "__main__":
    def _exit(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)  # clean up on SIGTERM too, not only Ctrl-C
    with KubeApiServer() as server:
        server.install_crds()
        server.install_rbac()
        print(server.kubeconfig, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
