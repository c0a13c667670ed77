"""Fixtures for the Typha tests."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.typha.support import HostAddress


@pytest.fixture
def host_ip() -> Iterator[str]:
    """A non-loopback address of this host for Typhas (EndpointSlices refuse loopback)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a veth pair for a non-loopback Typha address)")
    addr = HostAddress()
    yield addr.ip
    addr.cleanup()
