"""TyphaSyncer against a hand-driven server: silence, bad frames, ping/pong, resync diff."""
from __future__ import annotations

import socket
import threading
import time

from datastore.syncer import SyncStatus
from tests.typha.support import Collector, wait_for, wep
from typha import proto


class FakeTypha:
    """Accepts connections and hands each one to ``script`` on its own thread."""

    def __init__(self, script) -> None:  # type: ignore[no-untyped-def]
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.script = script
        self.accepted = 0
        self.received: list[dict] = []  # type: ignore[type-arg]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn, self.accepted), daemon=True).start()

    def _run(self, conn: socket.socket, n: int) -> None:
        buf = proto.FrameBuffer()
        conn.settimeout(0.2)

        def recv() -> None:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                return
            self.received += buf.feed(data)

        try:
            self.script(conn, n, recv)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


def _kvs(*items: tuple[str, object, str]) -> bytes:
    return proto.encode({"type": "kvs", "kvs": [{"k": k, "v": v, "r": r} for k, v, r in items]})


HELLO = proto.encode({"type": "serverHello", "version": proto.PROTOCOL_VERSION, "syncerType": "felix"})
IN_SYNC = proto.encode({"type": "status", "status": "in-sync"})


def test_client_resync_diff_silence_and_pings() -> None:
    a, va = wep("ns", "a")
    b, vb = wep("ns", "b")
    c, vc = wep("ns", "c")

    def script(conn: socket.socket, n: int, recv) -> None:  # type: ignore[no-untyped-def]
        recv()  # hello
        conn.sendall(HELLO)
        if n == 1:
            conn.sendall(_kvs((a.path, va, "5"), (b.path, vb, "6")) + IN_SYNC)
            # Never a ping back: the client must give up after its read timeout (1 s).
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                recv()  # the client's pings
        else:
            # Reconnect: a unchanged, b gone, c new.
            conn.sendall(_kvs((a.path, va, "5"), (c.path, vc, "9")) + IN_SYNC)
            conn.sendall(proto.encode({"type": "ping", "ts": 1}))
            while True:
                recv()
                time.sleep(0.05)

    server = FakeTypha(script)
    col = Collector(server.addr, "n1", ping_interval=0.3, read_timeout=1.0, min_backoff=0.05).start()
    try:
        wait_for(lambda: server.accepted >= 2 and col.snapshot() == {a.path: va, c.path: vc}, 10)
        assert [(p.rsplit("/", 1)[-1], v is None) for p, v, _ in col.log] == [
            ("a", False), ("b", False), ("c", False), ("b", True)]
        assert col.status == SyncStatus.IN_SYNC
        wait_for(lambda: any(m["type"] == "pong" for m in server.received), 5)
        assert any(m["type"] == "ping" for m in server.received)
        assert server.received[0]["type"] == "hello" and server.received[0]["node"] == "n1"
    finally:
        col.stop()
        server.close()


def test_client_drops_a_server_sending_garbage() -> None:
    def script(conn: socket.socket, n: int, recv) -> None:  # type: ignore[no-untyped-def]
        recv()
        if n == 1:
            conn.sendall(b"\x00\x00\x00\x05hello")
            time.sleep(2)
        else:
            conn.sendall(HELLO + IN_SYNC)
            time.sleep(5)

    server = FakeTypha(script)
    col = Collector(server.addr, "n1", min_backoff=0.05).start()
    try:
        wait_for(lambda: server.accepted >= 2 and col.syncer.in_sync, 5)
    finally:
        col.stop()
        server.close()
