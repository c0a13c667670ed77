"""Fixtures for confd + BIRD tests: a simulated cluster (see tests/support/nodes.py)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.nodes import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh fabric with its own etcd; every node and pod is removed afterwards."""
    with Cluster() as c:
        yield c
