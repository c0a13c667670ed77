"""confd keeps BIRD alive and never hands it a config it rejects."""
from __future__ import annotations

import os
import signal

import pytest

from bird.confd import Confd
from bird.control import is_running
from bird.daemon import BirdDaemon
from tests.support.nodes import Cluster, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def test_bird_restarted_and_bad_config_rejected(cluster: Cluster) -> None:
    cluster.create_pool("10.65.0.0/16")
    n1, n2 = cluster.add_node("node-1"), cluster.add_node("node-2")
    cluster.add_node("node-down")  # registered, never runs BIRD: one session stays down
    cluster.claim_block("node-2", "10.65.2.0/26")
    n1.start_confd()
    n2.start_confd()
    n1.wait_route("10.65.2.0/26", via=n2.ip)

    # BIRD dies: confd starts it again (graceful-restart recovery), routes come back.
    old = n1.bird_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (pid := n1.bird_pid()) not in (None, old) and is_running(n1.socket_path) and pid,
                   15, what="BIRD restarted by confd")
    n1.wait_established({n2.ip})
    n1.wait_route("10.65.2.0/26", via=n2.ip)
    # Graceful-restart recovery is bounded: with a peer down, routes learned
    # after the restart still reach the kernel within the wait (3 s here).
    cluster.claim_block("node-2", "10.65.3.0/26")
    n1.wait_route("10.65.3.0/26", via=n2.ip, timeout=15)

    # A config BIRD rejects is reported and not installed; BIRD keeps running the old one.
    with open(n1.config_path) as f:
        good = f.read()
    daemon = BirdDaemon(n1.config_path, n1.socket_path)
    confd = Confd(cluster.backend, "node-1", n1.config_path, daemon)
    assert confd.apply(good).message == "unchanged"  # same text: no reconfigure
    outcome = confd.apply(good + "protocol bgp broken { neighbor as; }\n")
    assert not outcome.ok and "bird -p rejected" in outcome.message
    assert "syntax error" in confd.stats.last_error
    with open(n1.config_path) as f:
        assert f.read() == good
    with open(n1.config_path + ".rejected") as f:
        assert "broken" in f.read()
    assert n1.bird_pid() == new and is_running(n1.socket_path)
    assert n2.ip in n1.established()
