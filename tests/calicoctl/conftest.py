"""Fixtures for calicoctl tests: the real ``calicoctl`` executable run against
a real datastore.

``datastore`` is parametrized so a Kubernetes datastore can be added next to
etcd: each parameter yields a :class:`Calicoctl` whose environment points the
executable at that datastore, plus a backend for direct checks.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.support.cni_exec import REPO

CALICOCTL = os.environ.get("PYCALICO_CALICOCTL", os.path.join(REPO, ".venv", "bin", "calicoctl"))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DATASTORES = ["etcd"]  # add "kubernetes" once datastore.kubernetes exists


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return (f"calicoctl {' '.join(self.args)} -> {self.returncode}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


@dataclass
class Calicoctl:
    """Runs the calicoctl executable with a datastore environment."""

    env: dict[str, str]
    backend: Any
    datastore: str
    calls: list[Result] = field(default_factory=list)

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60) -> Result:
        start = time.monotonic()
        proc = subprocess.run([CALICOCTL, *args], input=input, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)
        result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        self.calls.append(result)
        return result

    def ok(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = self(*args, input=input, env=env)
        assert result.ok, str(result)
        return result

    def fails(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = self(*args, input=input, env=env)
        assert result.returncode == 1, str(result)
        return result


def base_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/nonexistent"}
    for key in ("PYTHONDONTWRITEBYTECODE", "LANG", "LC_ALL"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


@pytest.fixture(params=DATASTORES)
def calicoctl(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Calicoctl]:
    if request.param == "etcd":
        server = request.getfixturevalue("etcd_server")
        backend = request.getfixturevalue("etcd_backend")  # wiped before and after
        env = {**base_env(), "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": server.endpoint}
        # The default config path must not exist or it would win over the environment.
        assert not os.path.exists("/etc/calico/calicoctl.cfg") or os.environ.get("PYCALICO_ALLOW_CFG")
        yield Calicoctl(env, backend, "etcd")
    else:  # pragma: no cover - future datastores
        pytest.skip(f"datastore {request.param} not available")


def stored_keys(backend: Any) -> list[str]:
    """Every key under /calico/ (etcd), to prove a failed command wrote nothing."""
    import base64

    reply = backend._post("/kv/range", {"key": base64.b64encode(b"/calico/").decode(),
                                        "range_end": base64.b64encode(b"/calico0").decode(), "keys_only": True})
    return sorted(base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs") or [])


_VOLATILE = [
    (re.compile(r'(uid|creationTimestamp|resourceVersion|clusterGUID)(": |: )"?[^",\n]+"?'), r"\1\2<X>"),
]


def normalise(text: str) -> str:
    """Mask per-run values (uids, timestamps, revisions, GUIDs) for golden comparison."""
    for rx, repl in _VOLATILE:
        text = rx.sub(repl, text)
    return text
