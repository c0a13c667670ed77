"""A tiny OCI image archive built locally from Debian's busybox-static.

No registry is reachable from the test machines: the image is assembled by
hand (one uncompressed layer with /bin/busybox and its applet links) and
loaded with ``ctr image import``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
import time

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ip", "ping", "sleep", "ifconfig", "cat", "hostname", "ls", "echo", "true", "route")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info)


def _layer(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "root", "var", "run"):
            _dir(tar, d)
        _dir(tar, "tmp", 0o1777)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def build_busybox_archive(path: str, name: str = "docker.io/pycalico/busybox:latest",
                          busybox: str = BUSYBOX) -> str:
    """Write an OCI image layout tarball to ``path``; return the image name."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    layer = _layer(busybox)
    with tarfile.open(path, "w") as tar:
        layer_digest, layer_size = _blob(tar, layer)
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
        config_digest, config_size = _blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
            }],
        }
        for member, data in (("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
                             ("index.json", json.dumps(index).encode())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.chmod(path, 0o644)
    return name
