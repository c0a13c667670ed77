"""Throwaway PKI for TLS tests, made with the openssl CLI: a CA, a server
certificate for 127.0.0.1/localhost, a client certificate, and the wrong
things (a second CA, a client certificate that CA signed, an unrelated key)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(cwd: str, name: str) -> str:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=cwd)
    os.chmod(os.path.join(cwd, name), 0o600)
    return os.path.join(cwd, name)


def _ca(cwd: str, prefix: str) -> tuple[str, str]:
    key = _key(cwd, f"{prefix}-key.pem")
    _openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={prefix}", "-days", "2", "-out", f"{prefix}.pem",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=cwd)
    return os.path.join(cwd, f"{prefix}.pem"), key


def _leaf(cwd: str, name: str, ca: tuple[str, str], usage: str, san: str | None) -> tuple[str, str]:
    key = _key(cwd, f"{name}-key.pem")
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=cwd)
    ext = os.path.join(cwd, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-days", "2", "-extfile", ext, "-out", f"{name}.pem", cwd=cwd)
    return os.path.join(cwd, f"{name}.pem"), key


@dataclass
class PKI:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # a CA that signed neither the server nor the client
    other_client_cert: str  # a client certificate signed by other_ca
    other_client_key: str
    stray_key: str  # a key that matches no certificate

    @property
    def etcd_tls(self) -> dict[str, str]:
        return {"ca": self.ca, "cert": self.server_cert, "key": self.server_key}


def make_pki(directory: str) -> PKI:
    os.makedirs(directory, exist_ok=True)
    ca = _ca(directory, "ca")
    other = _ca(directory, "other-ca")
    # clientAuth too: etcd's HTTP/JSON gateway dials its own gRPC port with the server certificate.
    server = _leaf(directory, "etcd-server", ca, "serverAuth,clientAuth", "IP:127.0.0.1,DNS:localhost")
    client = _leaf(directory, "calico-client", ca, "clientAuth", None)
    other_client = _leaf(directory, "rogue-client", other, "clientAuth", None)
    return PKI(ca[0], server[0], server[1], client[0], client[1], other[0], other_client[0], other_client[1],
               _key(directory, "stray-key.pem"))
