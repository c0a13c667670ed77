"""Delegate to the IPAM plugin named in the netconf, through CNI_PATH.

The IPAM plugin gets the same stdin and environment, with ``IgnoreUnknown=1``
prepended to CNI_ARGS (as upstream does) and CNI_COMMAND set per call.

``calico-ipam`` ships in the same bundle as ``calico`` (one executable, as
upstream ships them), so when it is the IPAM type it runs in this process:
the same argument parsing, handlers and error codes as the executable, minus
an exec and a second interpreter start-up (~400 ms of imports frozen). It must
still be on CNI_PATH, as for an exec. ``PYCALICO_IPAM_EXEC=1`` in the
environment execs it instead. Every other IPAM type is exec'd.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from cni import hosting
from cni.errors import IPAM_ERROR, INVALID_NETWORK_CONFIG, CNIError
from cni.skel import CmdArgs

IPAM_TIMEOUT = 120.0  # seconds; calico-ipam bounds its own datastore retries well below this
EXEC_ENV = "PYCALICO_IPAM_EXEC"  # "1": exec calico-ipam even though it could run in-process
IPAM_ABOUT = "Calico CNI IPAM plugin (pycalico)"  # as ipam/main.py reports itself


def find_plugin(name: str, path: list[str]) -> str:
    if not name or "/" in name:
        raise CNIError(INVALID_NETWORK_CONFIG, f"invalid IPAM plugin type {name!r}")
    for directory in path:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(
        INVALID_NETWORK_CONFIG,
        f"failed to find IPAM plugin {name!r} in path {':'.join(path)}",
    )


def exec_ipam(args: CmdArgs, ipam_type: str, command: str, stdin: bytes | None = None,
              backend: Any = None) -> dict[str, Any] | None:
    """Run the IPAM plugin; ``backend``: the caller's datastore connection,
    which an in-process calico-ipam borrows instead of opening its own."""
    plugin = find_plugin(ipam_type, args.path)
    if ipam_type == "calico-ipam":
        environ = hosting.request_environ() or os.environ
        if hosting.in_service or environ.get(EXEC_ENV, "") not in ("1", "true"):
            # Same handlers, no exec (the service always runs it in-process).
            return run_calico_ipam(args, command, stdin, backend)
    import subprocess

    env = _child_environ(dict(hosting.request_environ() or os.environ))
    env.update(ipam_environ(args, command))
    try:
        proc = subprocess.run(
            [plugin],
            input=args.stdin if stdin is None else stdin,
            env=env,
            capture_output=True,
            timeout=IPAM_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise CNIError(IPAM_ERROR, f"IPAM plugin {ipam_type} timed out after {IPAM_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise CNIError(IPAM_ERROR, f"failed to exec IPAM plugin {ipam_type}", str(exc)) from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            raise CNIError(int(err.get("code", IPAM_ERROR)), str(err.get("msg", "IPAM failed")), str(err.get("details", "")))
        except (ValueError, AttributeError, TypeError):
            raise CNIError(
                IPAM_ERROR,
                f"IPAM plugin {ipam_type} {command} failed (exit {proc.returncode})",
                out or proc.stderr.decode(errors="replace")[-500:],
            ) from None
    if not out:
        return None
    try:
        result = json.loads(out)
    except ValueError:
        raise CNIError(IPAM_ERROR, f"IPAM plugin {ipam_type} returned invalid JSON", out[:500]) from None
    return result if isinstance(result, dict) else None


def ipam_environ(args: CmdArgs, command: str) -> dict[str, str]:
    """The CNI variables a delegated IPAM plugin sees."""
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": args.container_id,
        "CNI_NETNS": args.netns,
        "CNI_IFNAME": args.ifname,
        "CNI_PATH": ":".join(args.path),
        "CNI_ARGS": ("IgnoreUnknown=1;" + args.args) if args.args else "IgnoreUnknown=1",
    }


class _Borrowed:
    """The caller's backend, lent to calico-ipam: its close() leaves the
    connection to the owner (who closes it once, at the end)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def close(self) -> None:
        pass


def run_calico_ipam(args: CmdArgs, command: str, stdin: bytes | None = None,
                    backend: Any = None) -> dict[str, Any] | None:
    """What exec'ing calico-ipam does (same environment rewrite, same
    validation, same handlers, same errors), as a call in this process.

    With ``backend`` (the caller's connection to the same datastore),
    calico-ipam uses it rather than connecting again (one TCP, or TLS,
    handshake less). calico-ipam configures logging for itself; the caller's
    handlers and level are put back afterwards."""
    import logging

    from cni.errors import INTERNAL_ERROR, INVALID_ENVIRONMENT
    from cni.skel import read_args

    data = args.stdin if stdin is None else stdin
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    lend = backend is not None and hosting.backend_factory is None
    try:
        ipam_args = read_args(ipam_environ(args, command), data)
        if lend:
            hosting.backend_factory = _lender(backend, ipam_args.conf)
        from ipam.plugin import HANDLERS

        handler = HANDLERS.get(ipam_args.command)
        if handler is None:
            raise CNIError(INVALID_ENVIRONMENT, f"{IPAM_ABOUT} does not implement {command}")
        result = handler(ipam_args)
    except CNIError:
        raise
    except Exception as exc:  # noqa: BLE001 - as the executable would report it
        logging.getLogger("calico-ipam").exception("calico-ipam %s failed", command)
        raise CNIError(INTERNAL_ERROR, f"internal error in {IPAM_ABOUT}: {type(exc).__name__}", str(exc)) from None
    finally:
        if lend:
            hosting.backend_factory = None
        for handler_ in root.handlers:
            if handler_ not in saved_handlers:
                handler_.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    if result is None:
        return None
    out = json.loads(json.dumps(result))  # exactly what would have crossed the pipe
    return out if isinstance(out, dict) else None


def _lender(backend: Any, conf: dict[str, Any]) -> Any:
    """A backend factory (hosting.connect) handing out ``backend`` for the
    datastore ``conf`` names, and a new connection for any other."""
    from datastore.config import DatastoreConfig, connect

    own = DatastoreConfig.from_netconf(conf)

    def factory(config: Any) -> Any:
        return _Borrowed(backend) if config == own else connect(config)

    return factory


def _child_environ(env: dict[str, str]) -> dict[str, str]:
    """The environment for a delegated plugin. A PyInstaller bundle's
    bootloader sets its own variables and library path; the child (another
    bundle, or a Go plugin) must not inherit them."""
    for key in [k for k in env if k.startswith("_PYI") or k.startswith("_MEI")]:
        del env[key]
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    return env
