"""A client for BIRD's control socket (what ``birdc`` speaks).

The protocol: BIRD greets with ``0001 BIRD <version> ready.``; each command
is one line; every reply line starts with a 4-digit code followed by ``-``
(more lines follow) or a space (last line); a line starting with a space
continues the previous code. Codes 0xxx are completions, 1xxx table rows,
2xxx table headers, 8xxx run-time errors, 9xxx parse errors.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

DEFAULT_SOCKET = "/var/run/calico/bird.ctl"


class BirdError(Exception):
    """BIRD could not be reached, or it answered a command with an error."""


@dataclass
class Reply:
    code: int  # the final line's code
    lines: list[tuple[int, str]] = field(default_factory=list)  # (code, text) per line

    @property
    def ok(self) -> bool:
        return self.code < 8000

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


class BirdControl:
    """One connection to BIRD's control socket."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self.version = ""

    def __enter__(self) -> "BirdControl":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise BirdError(f"cannot connect to BIRD at {self.path}: {exc}") from None
        self._sock = sock
        hello = self._read_reply()
        if hello.code != 1:
            raise BirdError(f"unexpected greeting from BIRD: {hello.text!r}")
        self.version = hello.text

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def command(self, line: str) -> Reply:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise BirdError(f"BIRD control socket {self.path}: {exc}") from None
        return self._read_reply()

    def _readline(self) -> str:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise BirdError(f"BIRD control socket {self.path}: {exc}") from None
            if not chunk:
                raise BirdError(f"BIRD closed the control socket {self.path}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def _read_reply(self) -> Reply:
        reply = Reply(code=0)
        code = 0
        while True:
            line = self._readline()
            if line.startswith(" "):
                reply.lines.append((code, line[1:]))
                continue
            if len(line) < 5 or not line[:4].isdigit():
                raise BirdError(f"malformed line from BIRD: {line!r}")
            code = int(line[:4])
            reply.lines.append((code, line[5:]))
            if line[4] == " ":
                reply.code = code
                return reply


def bird_command(path: str, line: str, timeout: float = 5.0) -> Reply:
    """Connect, run one command, disconnect."""
    with BirdControl(path, timeout) as ctl:
        return ctl.command(line)


def is_running(path: str) -> bool:
    try:
        with BirdControl(path, timeout=2.0):
            return True
    except BirdError:
        return False
