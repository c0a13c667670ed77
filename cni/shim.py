"""The fast path's client: hand a CNI request to the node's CNI service.

Imported first by the ``calico`` and ``calico-ipam`` executables, so it uses
the stdlib only (no pyroute2, pydantic, grpc, requests, kubernetes client).

Protocol on the unix socket (frames: 4-byte big-endian length + JSON):

1. shim -> service  ``{"v": 1, "plugin", "env", "stdin" (base64)}``
2. service -> shim  ``{"accepted": true}``
3. shim -> service  ``{"go": true}``: from here the request belongs to the service
4. service -> shim  ``{"code": <exit status>, "stdout": "<what to print>"}``

Before step 3 the shim may still give up (socket missing or refused, no
acceptance within the timeout) and run the request itself; the service only
starts work once it has read ``go``, so a request is never run twice. After
``go`` the shim never runs it: if the service dies, the answer is error 11
(try again later) and the runtime retries (DEL) or tears the sandbox down.
"""
from __future__ import annotations

import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only (deferred): typing costs ~3 ms to import
    import socket
    from typing import Any

# socket, json, struct and base64 are imported only once a socket path exists:
# with no service on the node the standalone path pays nothing for the shim.

DEFAULT_SOCKET = "/var/run/calico/cni.sock"
SOCKET_ENV = "PYCALICO_CNI_SOCKET"  # "" or "none": never use the service
TIMEOUT_ENV = "PYCALICO_CNI_SOCKET_TIMEOUT"  # seconds to be accepted
FORWARDED = ("ADD", "DEL", "CHECK", "STATUS", "GC")
REPLY_TIMEOUT = 300.0  # the runtime's own timeout is shorter; this only bounds a hung service
MAX_FRAME = 16 << 20
TRY_AGAIN_LATER = 11
_attempted = False


class Unavailable(Exception):
    """The service cannot take the request: run it standalone."""


def socket_path(environ: Any = None) -> str | None:
    environ = os.environ if environ is None else environ
    path = environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    if not path or path.lower() == "none":
        return None
    return path


def send_frame(sock: "socket.socket", obj: Any) -> None:
    import json
    import struct

    data = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_frame(sock: "socket.socket") -> Any:
    import json
    import struct

    header = _recv_exact(sock, 4)
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is too large")
    return json.loads(_recv_exact(sock, length))


def _recv_exact(sock: "socket.socket", n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the CNI service")
        buf += chunk
    return bytes(buf)


def _accept_timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, "1.0"))
    except ValueError:
        return 1.0


def offer(path: str, plugin: str, environ: dict[str, str], stdin: bytes, timeout: float) -> "socket.socket":
    """Steps 1-3; on return the service owns the request. Raises Unavailable
    (nothing was started) if the service is absent, refuses or is too slow."""
    import base64
    import socket

    if not os.path.exists(path):
        raise Unavailable("no socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        send_frame(sock, {"v": 1, "plugin": plugin, "env": environ,
                          "stdin": base64.b64encode(stdin).decode()})
        reply = recv_frame(sock)
        if not isinstance(reply, dict) or reply.get("accepted") is not True:
            raise Unavailable(f"service declined: {reply!r}")
        send_frame(sock, {"go": True})
    except (OSError, ValueError, ConnectionError) as exc:
        sock.close()
        raise Unavailable(str(exc)) from None
    except BaseException:
        sock.close()
        raise
    return sock


def forward(plugin: str) -> int | None:
    """Run this process's CNI request through the service if it is up.

    Returns the exit status after printing the service's output, or None when
    the caller must run the request itself (stdin is then re-armed)."""
    global _attempted
    if _attempted:  # calico's bundle dispatching to calico-ipam's main: one try per process
        return None
    _attempted = True
    environ = dict(os.environ)
    if environ.get("CNI_COMMAND") not in FORWARDED:
        return None
    path = socket_path(environ)
    if path is None or not os.path.exists(path):
        return None
    stdin = _read_stdin()
    try:
        sock = offer(path, plugin, environ, stdin, _accept_timeout())
    except Unavailable:
        import io

        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        return None
    try:
        with sock:
            sock.settimeout(REPLY_TIMEOUT)
            reply = recv_frame(sock)
        code = int(reply["code"])
        out = str(reply.get("stdout") or "")
    except (OSError, ValueError, ConnectionError, KeyError, TypeError) as exc:
        # Accepted but no answer: it may have done part of the work. Never redo it.
        code, out = 1, _try_again(stdin, str(exc) or type(exc).__name__)
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    return code


def _try_again(stdin: bytes, details: str) -> str:
    import json

    from cni.skel import error_version  # stdlib only

    err = {"cniVersion": error_version(stdin), "code": TRY_AGAIN_LATER,
           "msg": "the node's CNI service failed while handling the request; try again",
           "details": details}
    return json.dumps(err) + "\n"


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.closed:
        return b""
    try:
        return sys.stdin.buffer.read()
    except (OSError, ValueError, AttributeError):
        return b""
