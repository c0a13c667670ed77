"""The fast path's client: hand a CNI request to the node's CNI service.

Imported first by the ``calico`` and ``calico-ipam`` executables, so it uses
builtin modules only: ``_socket`` rather than :mod:`socket` (which pulls in
selectors, enum, array, ...) and a length-prefixed binary protocol rather
than JSON and base64 (:mod:`json` and :mod:`base64` import :mod:`re`). That
keeps the shim at the interpreter's own start-up cost (~12 ms less per exec
than with those imports).

Protocol on the unix socket. A frame is a sequence of fields; a field is a
4-byte big-endian length and that many bytes; a frame is a 4-byte length
and its fields.

1. shim -> service  ``[MAGIC, plugin, stdin, env key, env value, ...]``
2. service -> shim  ``[b"accepted"]`` (or ``[b"declined", reason]``)
3. shim -> service  ``[b"go"]``: from here the request belongs to the service
4. service -> shim  ``[b"result", exit status, stdout]``

(``[b"stats"]`` -> ``[b"stats", JSON]`` is the service's counters, for tests.)

Before step 3 the shim may still give up (socket missing or refused, no
acceptance within the timeout) and run the request itself; the service only
starts work once it has read ``go``, so a request is never run twice. After
``go`` the shim never runs it: if the service dies, the answer is error 11
(try again later) and the runtime retries (DEL) or tears the sandbox down.
"""
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only, as strings: typing costs ~3 ms to import
    from typing import Any

DEFAULT_SOCKET = "/var/run/calico/cni.sock"
SOCKET_ENV = "PYCALICO_CNI_SOCKET"  # "" or "none": never use the service
TIMEOUT_ENV = "PYCALICO_CNI_SOCKET_TIMEOUT"  # seconds to be accepted
MAGIC = b"pycalico-cni/2"
FORWARDED = ("ADD", "DEL", "CHECK", "STATUS", "GC")
REPLY_TIMEOUT = 300.0  # the runtime's own timeout is shorter; this only bounds a hung service
MAX_FRAME = 16 << 20
TRY_AGAIN_LATER = 11
_attempted = False


class Unavailable(Exception):
    """The service cannot take the request: run it standalone."""


def socket_path(environ: "Any" = None) -> "str | None":
    environ = os.environ if environ is None else environ
    path = environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    if not path or path.lower() == "none":
        return None
    return path


def encode(fields: "list[bytes]") -> bytes:
    """One frame holding ``fields``."""
    body = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    return len(body).to_bytes(4, "big") + body


def send_frame(sock: "Any", fields: "list[bytes]") -> None:
    sock.sendall(encode(fields))


def recv_frame(sock: "Any") -> "list[bytes]":
    length = int.from_bytes(_recv_exact(sock, 4), "big")
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is too large")
    return decode(_recv_exact(sock, length))


def decode(body: bytes) -> "list[bytes]":
    fields = []
    i = 0
    while i < len(body):
        if i + 4 > len(body):
            raise ValueError("truncated frame")
        n = int.from_bytes(body[i:i + 4], "big")
        i += 4
        if i + n > len(body):
            raise ValueError("truncated frame")
        fields.append(body[i:i + n])
        i += n
    return fields


def _recv_exact(sock: "Any", n: int) -> bytes:
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


def connect(path: str, timeout: float) -> "Any":
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def offer(path: str, plugin: str, environ: "dict[bytes, bytes]", stdin: bytes, timeout: float) -> "Any":
    """Steps 1-3; on return the service owns the request. Raises Unavailable
    (nothing was started) if the service is absent, refuses or is too slow."""
    if not os.path.exists(path):
        raise Unavailable("no socket")
    fields = [MAGIC, plugin.encode(), stdin]
    for key, value in environ.items():
        fields += (key, value)
    try:
        sock = connect(path, timeout)
    except (OSError, ValueError) as exc:
        raise Unavailable(str(exc)) from None
    try:
        send_frame(sock, fields)
        reply = recv_frame(sock)
        if reply[:1] != [b"accepted"]:
            raise Unavailable(f"service declined: {reply!r}")
        send_frame(sock, [b"go"])
    except (OSError, ValueError, ConnectionError) as exc:
        sock.close()
        raise Unavailable(str(exc)) from None
    except BaseException:
        sock.close()
        raise
    return sock


def forward(plugin: str) -> "int | None":
    """Run this process's CNI request through the service if it is up.

    Returns the exit status after printing the service's output, or None when
    the caller must run the request itself (stdin is then re-armed)."""
    global _attempted
    if _attempted:  # calico's bundle dispatching to calico-ipam's main: one try per process
        return None
    _attempted = True
    if os.environ.get("CNI_COMMAND") not in FORWARDED:
        return None
    path = socket_path()
    if path is None or not os.path.exists(path):
        return None
    stdin = _read_stdin()
    try:
        sock = offer(path, plugin, dict(os.environb), stdin, _accept_timeout())
    except Unavailable:
        import io

        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        return None
    try:
        try:
            sock.settimeout(REPLY_TIMEOUT)
            reply = recv_frame(sock)
        finally:
            sock.close()
        if len(reply) != 3 or reply[0] != b"result":
            raise ValueError(f"unexpected reply {reply[:1]!r}")
        code = int(reply[1])
        out = reply[2]
    except (OSError, ValueError, ConnectionError) as exc:
        # Accepted but no answer: it may have done part of the work. Never redo it.
        code, out = 1, _try_again(stdin, str(exc) or type(exc).__name__).encode()
    if out:
        sys.stdout.flush()
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
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
