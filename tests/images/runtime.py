"""Run the pycalico images in a private containerd, the way a kubelet would:
host-network containers with hostPath-style bind mounts."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tarfile
import time
from typing import Any

from tests.packaging.containerd import PrivateContainerd
from tests.support.nodes import connect_in_netns


def import_archive(ctrd: PrivateContainerd, archive: str, ref: str) -> None:
    """``ctr images import`` of a buildah OCI archive. Its index names the
    image by full reference (org.opencontainers.image.ref.name); ctr keeps a
    full reference only under a matching --base-name."""
    ctrd.ctr("images", "import", "--base-name", ref.rsplit(":", 1)[0], archive, timeout=300)


def run_args(image: str, name: str, *command: str, mounts: dict[str, str] | None = None,
             readonly: tuple[str, ...] = (), env: dict[str, str] | None = None, privileged: bool = False,
             net_host: bool = True) -> list[str]:
    args = ["run"]
    if net_host:
        args.append("--net-host")
    if privileged:
        args.append("--privileged")
    for dest, src in (mounts or {}).items():
        opts = "rbind:ro" if dest in readonly else "rbind:rw"
        args += ["--mount", f"type=bind,src={src},dst={dest},options={opts}"]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    return [*args, image, name, *command]


def run_to_completion(ctrd: PrivateContainerd, image: str, name: str, *command: str, timeout: float = 120,
                      **kw: Any) -> subprocess.CompletedProcess[str]:
    """``ctr run --rm`` in the foreground (an init container, a one-off calicoctl)."""
    args = run_args(image, name, *command, **kw)
    args.insert(1, "--rm")
    return ctrd.ctr(*args, check=False, timeout=timeout)


def run_detached(ctrd: PrivateContainerd, image: str, name: str, *command: str, log_path: str,
                 **kw: Any) -> None:
    """``ctr run -d``: the task keeps running in its shim; its output goes to ``log_path``."""
    args = run_args(image, name, *command, **kw)
    args[1:1] = ["-d", "--log-uri", f"file://{log_path}"]
    ctrd.ctr(*args, timeout=120)


def task_pid(ctrd: PrivateContainerd, name: str) -> int | None:
    for line in ctrd.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]:
        fields = line.split()
        if fields[:1] == [name] and len(fields) >= 3 and fields[2] == "RUNNING":
            return int(fields[1])
    return None


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Uid line for pid {pid}")


def http_get_in_netns(netns: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    """Status of ``GET http://127.0.0.1:<port><path>`` from inside ``netns``; None if refused."""
    try:
        sock = connect_in_netns(f"/var/run/netns/{netns}", ("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None
    try:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(4096):  # read it all: closing early resets the server's write
            reply += chunk
        parts = reply.decode(errors="replace").split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except OSError:
        return None
    finally:
        sock.close()


def wait_http_ok(netns: str, port: int, path: str, timeout: float, alive: Any = None) -> float:
    """Seconds until ``path`` answers 200 inside ``netns``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http_get_in_netns(netns, port, path) == 200:
            return time.monotonic() - start
        if alive is not None and not alive():
            raise RuntimeError(f"gave up on {path}: the container is gone")
        time.sleep(0.1)
    raise TimeoutError(f"{path} on port {port} not 200 within {timeout}s")


def image_config(archive: str) -> tuple[dict[str, Any], list[str]]:
    """The OCI image config and layer digests of a single-image archive."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> Any:
            f = tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
            assert f is not None
            return json.load(f)

        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = blob(index["manifests"][0]["digest"])
        return blob(manifest["config"]["digest"]), [layer["digest"] for layer in manifest["layers"]]


def free_socket_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
