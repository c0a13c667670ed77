"""Executing a CNI plugin (or cnitool) and recording exactly what it did."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CNI_ENV_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

DEFAULT_TIMEOUT = 60.0


class PluginNotFound(Exception):
    pass


def find_plugin(plugin_type: str, cni_path: list[str]) -> str:
    """libcni's FindInPath: the first executable named `plugin_type` in the CNI_PATH dirs."""
    if not plugin_type or "/" in plugin_type:
        raise PluginNotFound(f"invalid plugin type {plugin_type!r}")
    for directory in cni_path:
        candidate = Path(directory) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise PluginNotFound(f"plugin {plugin_type!r} not found in CNI path {':'.join(cni_path)}")


def base_environment() -> dict[str, str]:
    """The caller's environment without any CNI_* protocol variables (like a runtime's)."""
    return {k: v for k, v in os.environ.items() if k not in CNI_ENV_VARS}


@dataclass
class Call:
    """One process execution: its inputs and everything it produced."""

    argv: list[str]
    env: dict[str, str]  # only the protocol variables we set (CNI_*, NETCONFPATH, ...)
    stdin: bytes
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool = False
    is_plugin: bool = True
    _parsed: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    def stdout_json(self) -> Any:
        """Parse stdout as exactly one JSON document (raises ValueError otherwise)."""
        if self._parsed is None:
            self._parsed = json.loads(self.stdout.decode("utf-8"))
        return self._parsed

    def stdout_json_or_none(self) -> Any:
        try:
            return self.stdout_json()
        except ValueError:
            return None

    def describe(self) -> str:
        head = " ".join([Path(self.argv[0]).name, *self.argv[1:]])
        if self.is_plugin:
            head += f" (CNI_COMMAND={self.env.get('CNI_COMMAND', '<unset>')})"
        what = head
        out = self.stdout_text.strip()
        err = self.stderr.decode("utf-8", errors="replace").strip()
        parts = [f"{what} -> exit {self.returncode}" + (" (timed out)" if self.timed_out else "")]
        if out:
            parts.append(f"stdout: {_clip(out)}")
        if err:
            parts.append(f"stderr: {_clip(err)}")
        return "; ".join(parts)


def _clip(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(
    argv: list[str],
    protocol_env: dict[str, str | None],
    stdin: bytes = b"",
    timeout: float = DEFAULT_TIMEOUT,
    is_plugin: bool = True,
) -> Call:
    """Run argv with the caller's environment, minus CNI_* vars, plus `protocol_env`.

    A value of None in `protocol_env` means "leave this variable unset"."""
    env = base_environment()
    set_vars = {k: v for k, v in protocol_env.items() if v is not None}
    env.update(set_vars)
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=timeout)
        rc, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
    except subprocess.TimeoutExpired as exc:
        rc, timed_out = -1, True
        out = exc.stdout or b""
        err = exc.stderr or b""
    return Call(
        argv=list(argv),
        env=set_vars,
        stdin=stdin,
        returncode=rc,
        stdout=out,
        stderr=err,
        duration=time.monotonic() - start,
        timed_out=timed_out,
        is_plugin=is_plugin,
    )
