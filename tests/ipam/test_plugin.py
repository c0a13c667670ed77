"""CNI verbs of calico-ipam beyond ADD: specific IPs, DEL idempotence,
CHECK, datastore failures, and a light VERSION path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.ipam.conftest import IPAMEnv
from tests.ipam.helpers import allocations, handles
from tests.support.cni_exec import REPO
from tests.support.etcd_server import free_port
from tests.support.pools import create_pool

pytestmark = pytest.mark.etcd


def test_specific_ip_in_use_check_and_idempotent_del(ipam_env: IPAMEnv) -> None:
    create_pool(ipam_env.backend, "p", "10.48.0.0/24")
    ok = ipam_env.add("s1", cni_args="IgnoreUnknown=1;IP=10.48.0.77")
    assert ok.ok and ok.json["ips"] == [{"address": "10.48.0.77/32"}], ok.stdout + ok.stderr[-1000:]
    taken = ipam_env.add("s2", cni_args="IP=10.48.0.77")
    assert taken.json["code"] == 103 and "10.48.0.77" in taken.json["msg"]
    outside = ipam_env.add("s3", cni_args="IP=192.0.2.1")
    assert outside.json["code"] == 102 and "not in any enabled IP pool" in outside.json["msg"]
    assert set(handles(ipam_env.backend)) == {"k8s-pod-network.s1"}

    conf = ipam_env.conf()
    conf["prevResult"] = {"cniVersion": "1.0.0", "ips": [{"address": "10.48.0.77/32"}]}
    assert ipam_env.run("CHECK", conf, "s1").ok
    wrong = ipam_env.run("CHECK", conf, "s2")
    assert wrong.returncode != 0 and wrong.json["code"] == 105

    assert ipam_env.delete("s1").ok
    assert allocations(ipam_env.backend) == {}
    again = ipam_env.delete("s1")
    assert again.ok and again.stdout == ""


def test_datastore_down_is_try_again_later_quickly(ipam_env: IPAMEnv) -> None:
    conf = ipam_env.conf()
    conf.update(ipam_env.datastore.unreachable)
    start = time.monotonic()
    result = ipam_env.add("down1", conf)
    elapsed = time.monotonic() - start
    assert result.returncode != 0 and result.json["code"] == 11, result.stdout
    assert "datastore unavailable" in result.json["msg"]
    assert elapsed < 10
    assert ipam_env.delete("down1", conf).json["code"] == 11


def test_version_does_not_import_pydantic_or_etcd() -> None:
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('pydantic', 'etcd3gw', 'requests', 'datastore')))))\n"
        "import json\n"
        "from ipam.main import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], input=b'{"cniVersion": "1.0.0"}', cwd=REPO,
                          env=dict(os.environ, CNI_COMMAND="VERSION"), capture_output=True, timeout=30)
    assert proc.returncode == 0
    assert "1.0.0" in json.loads(proc.stdout)["supportedVersions"]
    assert json.loads(proc.stderr) == []


def test_release_empty_blocks_drops_the_affinity(ipam_env: IPAMEnv) -> None:
    from tests.ipam.helpers import block_affinities, ipam_snapshot

    create_pool(ipam_env.backend, "p", "10.49.0.0/24")
    keep = ipam_env.conf()
    drop = ipam_env.conf(release_empty_blocks="true")
    assert ipam_env.add("e1", keep).ok
    assert ipam_env.delete("e1", keep).ok
    assert block_affinities(ipam_env.backend) != {}  # upstream default: empty affine blocks stay
    assert ipam_env.add("e2", drop).ok
    assert ipam_env.delete("e2", drop).ok
    assert ipam_snapshot(ipam_env.backend) == {}  # block and affinity released
