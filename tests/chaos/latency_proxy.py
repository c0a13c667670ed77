"""A TCP proxy that adds latency or blackholes traffic, listening inside a netns.

Stands in for ``tc netem``, which this kernel lacks (``tc qdisc add ... netem``
fails with "Specified qdisc kind is unknown": no sch_netem). Data from the
client is held ``delay`` seconds before it is sent upstream (so every request
to etcd pays the latency once; answers flow back at once). While
``blackhole`` is set nothing is forwarded and new connections are accepted but
not connected upstream, as with a link dropping every packet; on heal the held
data flows, as TCP would retransmit it.
"""
from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Callable

from tests.support.nodes import connect_in_netns, listen_in_netns



class LatencyProxy:
    def __init__(self, listen_netns: str, upstream_netns: str, upstream: tuple[str, int], delay: float) -> None:
        self.delay = delay
        self.healed = threading.Event()
        self.healed.set()
        self._upstream_netns, self._upstream = f"/var/run/netns/{upstream_netns}", upstream
        self._listener = listen_in_netns(f"/var/run/netns/{listen_netns}", ("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"  # as seen inside listen_netns
        self._closed = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        self.healed.clear()

    def heal(self) -> None:
        self.healed.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.healed.wait()
        try:
            upstream = connect_in_netns(self._upstream_netns, self._upstream)
        except OSError:
            client.close()
            return
        self._socks += [client, upstream]
        self._pump(client, upstream, lambda: self.delay)
        self._pump(upstream, client, lambda: 0.0)

    def _pump(self, src: socket.socket, dst: socket.socket, delay: "Callable[[], float]") -> None:
        q: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def reader() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                q.put((time.monotonic(), data))
                if not data:
                    return

        def writer() -> None:
            while True:
                t, data = q.get()
                wait = t + delay() - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.healed.wait()
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.healed.set()
        self._listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
