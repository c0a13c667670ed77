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


@pytest.fixture
def dual_stack_cluster() -> Iterator[Cluster]:
    """As ``cluster``, with IPv6 node addresses too (fd00:31::/64)."""
    with Cluster(subnet6="fd00:31::/64") as c:
        yield c
