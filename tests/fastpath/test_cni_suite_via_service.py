"""tests/cni's plugin tests again, every call through the node's CNI service
(the ``calico`` fixture of tests/fastpath/conftest.py asserts the service
served each request)."""
from __future__ import annotations

import pytest

from tests.cni.test_plugin import (  # noqa: F401 - collected here with the fast-path fixtures
    test_del_of_unknown_container_succeeds,
    test_failure_after_ipam_rolls_back,
    test_plain_cni_container_and_dual_stack,
    test_repeated_add_returns_same_addresses,
    test_results_validate_for_every_version,
    test_status_and_gc,
    test_two_pods_ping_check_and_clean_delete,
)

pytestmark = [pytest.mark.etcd, pytest.mark.netns]
