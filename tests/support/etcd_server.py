"""A real etcd server on a free loopback port with a throwaway data dir."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from tests.support.process import stop_process

ETCD_BINARY = os.environ.get("PYCALICO_ETCD", shutil.which("etcd") or "/usr/bin/etcd")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """Start/stop/kill a single-member etcd. ``endpoint`` stays the same
    across restarts so clients can reconnect."""

    def __init__(self, host: str = "127.0.0.1", data_dir: str | None = None,
                 tls: dict[str, str] | None = None) -> None:
        self.host = host
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="pycalico-etcd-")
        self._own_dir = data_dir is None
        os.makedirs(self.data_dir, exist_ok=True)
        self.tls = tls or {}
        scheme = "https" if self.tls else "http"
        self.endpoint = f"{scheme}://{host}:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    def start(self, timeout: float = 20.0) -> "EtcdServer":
        args = [
            ETCD_BINARY,
            "--name", "pycalico-test",
            "--data-dir", os.path.join(self.data_dir, "data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-cluster", f"pycalico-test=http://{self.host}:{self.peer_port}",
            "--log-level", "warn",
        ]
        if self.tls:
            args += [
                "--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                "--trusted-ca-file", self.tls["ca"], "--client-cert-auth",
            ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if self.tls:
                    with socket.create_connection((self.host, self.client_port), timeout=0.5):
                        return
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as resp:
                    if b"true" in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not become ready in {timeout}s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, grace=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def wipe_calico(backend) -> None:  # type: ignore[no-untyped-def]
    """Delete every key under /calico/ through an EtcdBackend (test isolation)."""
    backend._post("/kv/deleterange", {"key": "L2NhbGljby8=", "range_end": "L2NhbGljbzA="})  # /calico/ .. /calico0


def kv_requests(endpoint: str) -> int:
    """KV requests (Range, Txn, Put, DeleteRange) this etcd has handled so far,
    from its own metrics: tests and benches count round trips with it."""
    import urllib.request

    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as resp:
        body = resp.read().decode()
    total = 0
    for line in body.splitlines():
        if line.startswith("grpc_server_handled_total{") and 'grpc_service="etcdserverpb.KV"' in line \
                and 'grpc_method="Compact"' not in line:
            total += int(float(line.rpartition(" ")[2]))
    return total
