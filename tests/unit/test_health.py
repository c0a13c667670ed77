"""Felix health server: a client that resets the connection early is logged
as one debug line, not a traceback on stderr."""
from __future__ import annotations

import logging
import socket
import struct
import time
import urllib.request

import pytest

from felix.health import HealthAggregator, serve


def test_client_reset_logs_one_debug_line(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    agg = HealthAggregator()
    agg.report("felix", live=True, ready=True)
    server = serve(agg, "127.0.0.1", 0)
    port = server.server_address[1]
    try:
        caplog.set_level(logging.DEBUG, logger="felix.health")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /liveness HTTP/1.1\r\n")  # request line only, then RST
            time.sleep(0.1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 10
        while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone = [r for r in caplog.records if "went away" in r.getMessage()]
        assert len(gone) == 1 and gone[0].levelno == logging.DEBUG
        assert "Traceback" not in capsys.readouterr().err
        # The server keeps answering afterwards.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=10) as resp:
            assert resp.status == 200
    finally:
        server.shutdown()
        server.server_close()
