"""The pycalico images in containerd, as a DaemonSet would run them.

A network namespace is the node: it has an uplink to a fabric netns where
etcd listens (tests.support.nodes.Cluster). A private containerd runs inside
it, so host-network containers share the node's network. Then, as kubelet
would: the node image's installer runs to completion (init container) and
puts calico, calico-ipam, the reference plugins and the conflist into
test-owned "host" dirs; the node image's supervisor starts Felix and confd
(which starts BIRD) against etcd. Two busybox containers started with
``ctr run --cni`` get addresses from calico-ipam and ping each other; a deny
policy applied with the pycalico-ctl container (as nobody) makes the ping
fail; Felix killed inside the container is restarted by the supervisor.
Run once per Felix data plane the image carries (nftables, iptables).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from tests.images.runtime import (
    http_get_in_netns, image_config, import_archive, run_detached, run_to_completion, task_pid, uid_of,
    wait_http_ok,
)
from tests.packaging.containerd import PrivateContainerd
from tests.packaging.oci_image import build_busybox_archive
from tests.support.cni_exec import REPO
from tests.support.nodes import Cluster, wait_for

pytestmark = [
    # The first test's setup may build the frozen bundle and the images (cold: 1.5-4 min here).
    pytest.mark.timeout(600),
    pytest.mark.etcd,
    pytest.mark.netns,
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("runc") and os.path.exists("/bin/busybox")),
                       reason="containerd, runc and busybox-static are installed by scripts/setup"),
]

POOL = "10.127.0.0/16"
FELIX_HEALTH_PORT = 9099
TYPHA_HEALTH_PORT = 9098
DENY = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-pod-ingress
spec:
  selector: has({label})
  types: [Ingress]
  ingress:
    - action: Deny
"""


def test_image_configs(images) -> None:  # type: ignore[no-untyped-def]
    configs = {name: image_config(image.archive) for name, image in images.items()}
    node, node_layers = configs["pycalico-node"]
    assert node["config"]["User"] == "0:0"
    assert node["config"]["Entrypoint"] == ["/usr/local/bin/start-calico-node"]
    for name, entry in (("pycalico-typha", "/usr/bin/calico-typha"), ("pycalico-ctl", "/usr/bin/calicoctl")):
        config, layers = configs[name]
        assert config["config"]["User"] == "65534:65534", name  # nobody: least privilege that works
        assert config["config"]["Entrypoint"] == [entry]
        assert layers[0] == node_layers[0]  # one shared base layer (bundle + libraries)
    assert {i.ref for i in images.values()} == {
        "docker.io/pycalico/node:v0.1.0", "docker.io/pycalico/typha:v0.1.0", "docker.io/pycalico/ctl:v0.1.0"}


def test_manifests_run_these_images_with_upstreams_host_mounts(images) -> None:  # type: ignore[no-untyped-def]
    import yaml

    manifests = os.path.join(REPO, "packaging", "manifests")
    pods = {}
    for name in ("calico-node.yaml", "calico-typha.yaml"):
        with open(os.path.join(manifests, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc["kind"] in ("DaemonSet", "Deployment"):
                    pods[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    node, typha = pods["calico-node"], pods["calico-typha"]
    for container in node["initContainers"] + node["containers"]:
        assert container["image"] == images["pycalico-node"].ref, container["name"]
        assert container["imagePullPolicy"] == "IfNotPresent"  # side-loaded: never pulled
    assert [c["image"] for c in typha["containers"]] == [images["pycalico-typha"].ref]
    assert typha["containers"][0]["securityContext"]["runAsUser"] == 65534  # as the image's USER
    host_paths = {v["hostPath"]["path"] for v in node["volumes"] if "hostPath" in v}
    assert {"/opt/cni/bin", "/etc/cni/net.d", "/var/run/calico", "/var/lib/calico", "/var/log/calico",
            "/lib/modules", "/run/xtables.lock"} <= host_paths


def pod_address(ctrd: PrivateContainerd, name: str) -> str:
    """eth0's address; retried: ``ctr tasks exec`` output now and then comes back empty."""
    seen: list[str] = []

    def address() -> str | None:
        out = ctrd.exec(name, "ip", "-4", "-o", "addr", "show", "eth0")
        seen.append(f"{out.returncode} {out.stdout!r} {out.stderr!r}")
        match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/32", out.stdout)
        return match.group(1) if match else None

    try:
        return str(wait_for(address, 10, interval=0.5, what=f"{name}'s address"))
    except TimeoutError:
        pytest.fail(f"no address on {name}'s eth0: {seen[-3:]}\n{ctrd.ctr_log(name)}")


def pings(ctrd: PrivateContainerd, src: str, dst: str) -> bool:
    return ctrd.exec(src, "ping", "-c", "1", "-W", "1", dst).returncode == 0


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@pytest.mark.parametrize("dataplane", ["nftables", "iptables"])
def test_node_image_networks_pods_and_enforces_policy(  # type: ignore[no-untyped-def]
        images, tmp_path, dataplane: str) -> None:
    node_ref, ctl_ref, typha_ref = (images[n].ref for n in ("pycalico-node", "pycalico-ctl", "pycalico-typha"))
    host = {d: str(tmp_path / d.strip("/").replace("/", "-")) for d in (
        "/opt/cni/bin", "/etc/cni/net.d", "/var/run/calico", "/var/lib/calico", "/var/log/calico")}
    for d in host.values():
        os.makedirs(d)
    uid = os.urandom(3).hex()
    timings: dict[str, float] = {}
    with Cluster() as cluster:
        node = cluster.add_node("node-1")
        cluster.create_pool(POOL)
        datastore = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": cluster.etcd_endpoint}
        with PrivateContainerd(host["/opt/cni/bin"], host["/etc/cni/net.d"], netns=node.netns) as ctrd:
            start = time.monotonic()
            for image in images.values():
                import_archive(ctrd, image.archive, image.ref)
            timings["import"] = time.monotonic() - start
            busybox = build_busybox_archive(str(tmp_path / "busybox.tar"))
            ctrd.import_image(str(tmp_path / "busybox.tar"))

            # Init container: the installer writes into the node's CNI dirs.
            install = run_to_completion(
                ctrd, node_ref, f"install-{uid}", "/opt/pycalico/install", "--host-root", "/host",
                "--plugins-dir", "/opt/cni/bin", "--etcd-endpoints", cluster.etcd_endpoint,
                "--nodename", node.name, "--log-file-path", str(tmp_path / "cni.log"),
                "--extra-config", json.dumps({"ipam_lock_file": str(tmp_path / "ipam.lock")}),
                mounts={"/host/opt/cni/bin": host["/opt/cni/bin"], "/host/etc/cni/net.d": host["/etc/cni/net.d"]},
                privileged=True)
            assert install.returncode == 0, install.stderr + install.stdout
            installed = set(os.listdir(host["/opt/cni/bin"]))
            assert {"calico", "calico-ipam", "portmap", "bandwidth", "loopback"} <= installed
            with open(os.path.join(host["/etc/cni/net.d"], "10-calico.conflist")) as f:
                network = json.load(f)["name"]

            # The node agent: privileged, host network, upstream's host mounts.
            node_name = f"calico-node-{uid}"
            start = time.monotonic()
            mounts = {d: host[d] for d in ("/var/run/calico", "/var/lib/calico", "/var/log/calico")}
            if os.path.isdir("/lib/modules"):  # not on every VM
                mounts["/lib/modules"] = "/lib/modules"
            run_detached(
                ctrd, node_ref, node_name, log_path=str(tmp_path / "calico-node.log"), mounts=mounts,
                readonly=("/lib/modules",), privileged=True,
                env={**datastore, "NODENAME": node.name, "FELIX_HEALTHENABLED": "true",
                     "FELIX_DEFAULTENDPOINTTOHOSTACTION": "ACCEPT", "CALICO_NETWORKING_BACKEND": "bird",
                     "FELIX_NFTABLESMODE": "Enabled" if dataplane == "nftables" else "Disabled"})

            def node_log() -> str:
                return read(str(tmp_path / "calico-node.log"))[-6000:]

            try:
                wait_http_ok(node.netns, FELIX_HEALTH_PORT, "/readiness", 120,
                             alive=lambda: task_pid(ctrd, node_name) is not None)
                timings["felix_ready"] = time.monotonic() - start  # from `ctr run`
            except (TimeoutError, RuntimeError) as exc:
                pytest.fail(f"{exc}\n{node_log()}")
            # confd rendered bird.cfg and runs BIRD on the mounted socket.
            wait_for(lambda: ctrd.exec(node_name, "birdcl", "-s", "/var/run/calico/bird.ctl", "show", "status")
                     .stdout.count("Daemon is up and running"), 60, what="BIRD up\n" + node_log())

            # Two pods (ctr run --cni: the installed frozen calico + calico-ipam).
            pods = [f"a{uid}", f"b{uid}"]
            for pod in pods:
                ctrd.run_with_cni(busybox, pod, "sleep", "600")
            addresses = [pod_address(ctrd, pod) for pod in pods]
            assert all(a.startswith("10.127.") for a in addresses) and addresses[0] != addresses[1]
            for src, dst in ((pods[0], addresses[1]), (pods[1], addresses[0])):
                wait_for(lambda: pings(ctrd, src, dst), 30, what=f"{src} -> {dst} ping\n{node_log()}")

            # A deny policy, applied by calicoctl in the pycalico-ctl container.
            policy = tmp_path / "deny.yaml"
            policy.write_text(DENY.format(label=network))
            policy.chmod(0o644)
            applied = run_to_completion(ctrd, ctl_ref, f"ctl-{uid}", "/usr/bin/calicoctl", "apply", "-f",
                                        "/policy/deny.yaml", mounts={"/policy/deny.yaml": str(policy)},
                                        readonly=("/policy/deny.yaml",), env=datastore)
            assert applied.returncode == 0, applied.stderr + applied.stdout
            wait_for(lambda: not pings(ctrd, pods[0], addresses[1]), 30, what=f"ping denied\n{node_log()}")
            assert not pings(ctrd, pods[1], addresses[0])

            # The supervisor restarts Felix when it dies.
            pid_file = os.path.join(host["/var/run/calico"], "supervise", "felix.pid")
            old = read(pid_file).strip()
            assert old, node_log()
            assert ctrd.exec(node_name, "kill", "-9", old).returncode == 0
            wait_for(lambda: read(pid_file).strip() not in ("", old), 30, what="felix restarted\n" + node_log())
            wait_http_ok(node.netns, FELIX_HEALTH_PORT, "/readiness", 120)
            assert "felix exited with status 137; restarting" in read(str(tmp_path / "calico-node.log"))

            # Typha runs as nobody and gets in sync with etcd.
            typha_name = f"typha-{uid}"
            run_detached(ctrd, typha_ref, typha_name, log_path=str(tmp_path / "typha.log"), env=datastore)
            pid = task_pid(ctrd, typha_name)
            assert pid is not None and uid_of(pid) == 65534
            try:
                wait_http_ok(node.netns, TYPHA_HEALTH_PORT, "/readiness", 60)
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n{read(str(tmp_path / 'typha.log'))[-3000:]}")
            assert http_get_in_netns(node.netns, TYPHA_HEALTH_PORT, "/liveness") == 200

            for pod in pods:
                ctrd.stop_container(pod)

            # SIGTERM (a pod deletion): the supervisor stops Felix and confd
            # (which stops BIRD) and exits.
            ctrd.ctr("tasks", "kill", "--signal", "SIGTERM", node_name)
            wait_for(lambda: task_pid(ctrd, node_name) is None, 30, what="node container stopped\n" + node_log())
            assert "all services stopped" in read(str(tmp_path / "calico-node.log"))
            assert not os.path.exists(pid_file)
    print(f"\n{dataplane}: images import {timings['import']:.1f}s; node container start -> Felix ready "
          f"{timings['felix_ready']:.1f}s")
