"""containerd + runc run two real containers networked by the installed frozen
calico + calico-ipam (``ctr run --cni``), from a busybox image built here."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.packaging.containerd import NAMESPACE, PrivateContainerd
from tests.packaging.oci_image import build_busybox_archive
from tests.packaging.test_cnitool import allocated
from tests.support.netns import cali_links
from tests.support.pools import create_pool

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.netns,
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("runc") and os.path.exists("/bin/busybox")),
                       reason="containerd, runc and busybox-static are installed by scripts/setup"),
]

POOL = "10.126.0.0/16"


def eth0_address(ctrd: PrivateContainerd, name: str) -> str:
    out = ctrd.exec(name, "ip", "-4", "-o", "addr", "show", "eth0")
    assert out.returncode == 0, out.stderr
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/32", out.stdout)
    assert match, out.stdout
    return match.group(1)


def test_two_containers_get_calico_addresses_and_ping(frozen_install, etcd_backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    create_pool(etcd_backend, "pkg-ctr-pool", POOL)
    image = build_busybox_archive(str(tmp_path / "busybox-oci.tar"))
    suffix = os.urandom(4).hex()
    names = [f"a{suffix}", f"b{suffix}"]
    with PrivateContainerd(frozen_install.bin_dir, frozen_install.conf_dir) as ctrd:
        ctrd.import_image(str(tmp_path / "busybox-oci.tar"))
        for name in names:
            ctrd.run_with_cni(image, name, "sleep", "600")
        addresses = [eth0_address(ctrd, name) for name in names]
        assert all(a.startswith("10.126.") for a in addresses) and addresses[0] != addresses[1]
        assert len(allocated(etcd_backend)) == 2  # both from calico-ipam, recorded in etcd
        # A non-Kubernetes workload's host veth is named from the attachment id,
        # which ctr makes "<namespace>-<id>" (cni.names.Workload.host_ifname).
        from cni.names import Workload

        host_ifs = {Workload.from_args("n", f"{NAMESPACE}-{name}", "eth0", {}).host_ifname for name in names}
        assert host_ifs <= cali_links()
        for src, dst in ((names[0], addresses[1]), (names[1], addresses[0])):
            ping = ctrd.exec(src, "ping", "-c", "2", "-W", "2", dst)
            assert ping.returncode == 0, ping.stdout + ping.stderr
        # Killing a task makes the foreground ``ctr run`` tear the network down
        # (CNI DEL with an empty CNI_NETNS) and remove the container.
        for name in names:
            ctrd.stop_container(name)
            log = ctrd.ctr_log(name)
            assert "network review" not in log, log  # ctr's message when DEL fails
        assert ctrd.ctr("containers", "ls", "-q").stdout.split() == []
    assert allocated(etcd_backend) == []
    assert not host_ifs & cali_links()
    log = open(frozen_install.log_file).read()
    assert log.count("calico-ipam: ADD") >= 2 and "released handle" in log
