"""The CNI protocol: environment, stdin, result versions and error output.

Shared by the ``calico`` and ``calico-ipam`` executables (like the Go
reference plugins' ``pkg/skel``). Stdlib only: VERSION must stay fast.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cni.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL_ERROR,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    CNIError,
)

from cni.version import LATEST_VERSION, SUPPORTED_VERSIONS, version_result  # noqa: F401 - re-exported
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# Commands that act on one container attachment and so need the container env.
_NEEDS_CONTAINER = {"ADD": True, "DEL": True, "CHECK": True}
# Minimum spec version of each command.
_MIN_VERSION = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise CNIError(INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}") from None


@dataclass
class CmdArgs:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: str  # raw CNI_ARGS
    path: list[str]
    stdin: bytes
    conf: dict[str, Any] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        return str(self.conf.get("cniVersion", "0.2.0"))

    @property
    def cni_args(self) -> dict[str, str]:
        return parse_cni_args(self.args)


def parse_cni_args(raw: str) -> dict[str, str]:
    """``K1=V1;K2=V2`` as in CNI_ARGS."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_ARGS pair {pair!r}", "expected KEY=VALUE")
        if not pair.isascii() and not _is_utf8(pair):
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS pair {pair!r} is not valid UTF-8")
        out[key] = value
    return out


def _is_utf8(text: str) -> bool:
    """False for a str holding lone surrogates: os.environ's stand-ins for undecodable bytes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def read_args(environ: Mapping[str, str], stdin: bytes) -> CmdArgs:
    """Validate the environment and parse the network config."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(INVALID_ENVIRONMENT, "required env variable CNI_COMMAND is missing")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
    args = CmdArgs(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=environ.get("CNI_ARGS", ""),
        path=[p for p in environ.get("CNI_PATH", "").split(":") if p],
        stdin=stdin,
    )
    if command == "VERSION":
        return args
    missing = []
    if _NEEDS_CONTAINER.get(command):
        if not args.container_id:
            missing.append("CNI_CONTAINERID")
        if not args.ifname:
            missing.append("CNI_IFNAME")
        if command in ("ADD", "CHECK") and not args.netns:
            missing.append("CNI_NETNS")
    if command in ("ADD", "CHECK", "GC", "STATUS") or command == "DEL":
        if not args.path and command != "DEL":
            missing.append("CNI_PATH")
    if missing:
        raise CNIError(
            INVALID_ENVIRONMENT,
            f"required env variables [{','.join(missing)}] missing",
        )
    if args.container_id and not _valid_container_id(args.container_id):
        raise CNIError(INVALID_ENVIRONMENT, "invalid characters in CNI_CONTAINERID", args.container_id)
    if args.ifname and not _valid_ifname(args.ifname):
        raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME", args.ifname)
    args.conf = decode_conf(stdin)
    check_version(args.cni_version, command)
    parse_cni_args(args.args)  # validate early: bad CNI_ARGS is error 4
    return args


def _valid_container_id(cid: str) -> bool:
    # Spec: alphanumeric start, then alphanumerics, '_', '.', '-'.
    return cid[0].isalnum() and all(c.isalnum() or c in "_.-" for c in cid) and cid.isascii()


def _valid_ifname(name: str) -> bool:
    return 0 < len(name) <= 15 and name not in (".", "..") and not any(
        c in "/: \t\n" for c in name
    ) and _is_utf8(name)


def decode_conf(stdin: bytes) -> dict[str, Any]:
    try:
        conf = json.loads(stdin or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DECODING_FAILURE, "error parsing network config", str(exc)) from None
    if not isinstance(conf, dict):
        raise CNIError(DECODING_FAILURE, "network config must be a JSON object")
    version = conf.get("cniVersion", "0.2.0")
    if not isinstance(version, str):
        raise CNIError(INVALID_NETWORK_CONFIG, "cniVersion must be a string")
    return conf


def check_version(version: str, command: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}, plugin supports {SUPPORTED_VERSIONS}",
        )
    minimum = _MIN_VERSION.get(command)
    if minimum and version_tuple(version) < version_tuple(minimum):
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"config version {version} does not allow {command} (needs >= {minimum})",
        )


# -- results ------------------------------------------------------------------


def convert_result(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """Convert a 1.x-shaped result (what we build internally) to ``to_version``.

    0.3.x/0.4.0 results carry ``version`` per IP; 1.0.0+ drop it. Everything
    else is shared by those versions.
    """
    out = json.loads(json.dumps(result))  # deep copy
    out["cniVersion"] = to_version
    if version_tuple(to_version) < (1, 0, 0):
        for ip in out.get("ips", []):
            ip["version"] = "6" if ":" in ip["address"] else "4"
    else:
        for ip in out.get("ips", []):
            ip.pop("version", None)
    return out


def upgrade_result(prev: dict[str, Any]) -> dict[str, Any]:
    """Normalise a prevResult / IPAM result of any supported version to 1.x shape."""
    out = json.loads(json.dumps(prev))
    for ip in out.get("ips", []):
        ip.pop("version", None)
    return out


# -- output ---------------------------------------------------------------------


def error_version(stdin: bytes) -> str:
    try:
        conf = json.loads(stdin)
        version = conf.get("cniVersion") if isinstance(conf, dict) else None
        if isinstance(version, str) and version in SUPPORTED_VERSIONS:
            return version
    except (ValueError, TypeError):
        pass
    return LATEST_VERSION


Handler = Callable[[CmdArgs], "dict[str, Any] | None"]
Invoke = Callable[[Handler, CmdArgs], "dict[str, Any] | None"]


def _call(handler: Handler, args: CmdArgs) -> dict[str, Any] | None:
    return handler(args)


def dispatch(
    handlers: Mapping[str, Handler],
    about: str,
    environ: Mapping[str, str],
    stdin: bytes,
    invoke: Invoke = _call,
) -> tuple[int, str]:
    """One CNI invocation: (exit status, stdout text).

    The text is exactly one JSON document (result or error) and a newline,
    except for DEL/GC success, which print nothing. ``invoke`` calls the
    handler (a host can wrap the call, e.g. in per-request state). Shared by
    :func:`run` (the executables) and :mod:`cni.service` (the warm service).
    """
    try:
        if environ.get("CNI_COMMAND") == "VERSION":
            return 0, _dump(version_result(stdin))
        args = read_args(environ, stdin)
        handler = handlers.get(args.command)
        if handler is None:
            raise CNIError(INVALID_ENVIRONMENT, f"{about} does not implement {args.command}")
        result = invoke(handler, args)
        return 0, (_dump(result) if result is not None else "")
    except CNIError as err:
        _log_error(err)
        return 1, _dump(err.to_json(error_version(stdin)))
    except Exception as exc:  # noqa: BLE001 - the spec wants JSON, never a traceback
        import logging

        logging.getLogger("cni").exception("unexpected error in %s", about)
        err = CNIError(INTERNAL_ERROR, f"internal error in {about}: {type(exc).__name__}", str(exc))
        return 1, _dump(err.to_json(error_version(stdin)))


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj) + "\n"


def run(handlers: Mapping[str, Handler], about: str, environ: Mapping[str, str] | None = None) -> int:
    """Dispatch one CNI invocation from this process's environment and
    stdin to stdout; return the process exit status."""
    status, out = dispatch(handlers, about, os.environ if environ is None else environ, _read_stdin())
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    return status


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.closed:
        return b""
    try:
        return sys.stdin.buffer.read()
    except (OSError, ValueError):
        return b""


def _log_error(err: CNIError) -> None:
    import logging

    logging.getLogger("cni").error("code %d: %s", err.code, err)
