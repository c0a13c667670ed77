"""Exec CNI plugins the way a runtime does (env + stdin), for tests and benches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("PYCALICO_CACHE", "/var/cache/pycalico")
REFERENCE_PLUGINS = os.path.join(CACHE, "cni-plugins")
VENV_BIN = os.path.join(REPO, ".venv", "bin")
OUR_PLUGINS = ("calico", "calico-ipam")


@dataclass
class PluginResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout) if self.stdout.strip() else {}

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def make_cni_path(directory: str, our_bin_dir: str | None = None) -> str:
    """A CNI_PATH dir holding our plugins (venv entry points by default, or a
    frozen bundle's dir) and every reference plugin built by build-go-peers."""
    os.makedirs(directory, exist_ok=True)
    source = our_bin_dir or os.environ.get("PYCALICO_CNI_BIN") or VENV_BIN
    for name in OUR_PLUGINS:
        link = os.path.join(directory, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(source, name), link)
    if os.path.isdir(REFERENCE_PLUGINS):
        for name in os.listdir(REFERENCE_PLUGINS):
            link = os.path.join(directory, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(REFERENCE_PLUGINS, name), link)
    return directory


def exec_plugin(
    cni_path: str,
    plugin: str,
    command: str,
    conf: dict[str, Any] | bytes | str,
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "eth0",
    cni_args: str = "",
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
) -> PluginResult:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": cni_path,
    }
    for key in ("PYTHONDONTWRITEBYTECODE",):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra_env or {})
    if isinstance(conf, dict):
        stdin = json.dumps(conf).encode()
    elif isinstance(conf, str):
        stdin = conf.encode()
    else:
        stdin = conf
    proc = subprocess.run(
        [os.path.join(cni_path, plugin)],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=timeout,
    )
    return PluginResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


if __name__ == "__main__":  # tiny manual driver
    print(make_cni_path(sys.argv[1]))
