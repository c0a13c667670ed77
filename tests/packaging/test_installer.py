"""The installer (calico_install) on real directories.

Most cases run it in-process against a fake plugin source (a shell script
answering VERSION) so they take milliseconds; the frozen ``install`` link is
exercised by test_cnitool.py and test_containerd.py and below once.
"""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import PACKAGING, run_frozen_install

from calico_install.config import load  # noqa: E402  (on sys.path via conftest)
from calico_install.errors import InstallError  # noqa: E402
from calico_install.main import install_once  # noqa: E402

FAKE_PLUGIN = """#!/bin/sh
cat >/dev/null
echo '{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"], "build": "%s"}'
"""


def fake_source(path, build_id: str | None = "b1", marker: str = "one") -> str:  # type: ignore[no-untyped-def]
    """A stand-in for the frozen bundle: ``calico`` + links, ``_internal``, BUILD-ID."""
    path.mkdir(parents=True)
    (path / "calico").write_text(FAKE_PLUGIN % marker)
    (path / "calico").chmod(0o755)
    for link in ("calico-ipam", "calicoctl", "install"):
        os.symlink("calico", path / link)
    (path / "_internal").mkdir()
    (path / "_internal" / "lib.txt").write_text(marker)
    if build_id:
        (path / "BUILD-ID").write_text(build_id + "\n")
    return str(path)


def fake_plugins(path) -> str:  # type: ignore[no-untyped-def]
    path.mkdir()
    for name in ("portmap", "bandwidth", "loopback"):
        (path / name).write_text(f"#!/bin/sh\necho {name}\n")
        (path / name).chmod(0o755)
    (path / "README").write_text("not a plugin")
    return str(path)


class Node:
    """Target dirs of one test plus a helper to run the installer."""

    def __init__(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        self.tmp = tmp_path
        self.bin_dir = str(tmp_path / "opt" / "cni" / "bin")
        self.conf_dir = str(tmp_path / "etc" / "cni" / "net.d")
        self.source = fake_source(tmp_path / "bundle")

    def install(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        argv = ["--bin-dir", self.bin_dir, "--conf-dir", self.conf_dir, "--source-dir", self.source,
                "--nodename", "node-1", *args]
        base = {"ETCD_ENDPOINTS": "http://10.0.0.1:2379", "TLS_ASSETS_DIR": str(self.tmp / "no-secrets")}
        _, changed = install_once(load(argv, {**base, **(env or {})}))
        return changed

    @property
    def conflist(self) -> dict[str, Any]:
        with open(os.path.join(self.conf_dir, "10-calico.conflist")) as f:
            return json.load(f)  # type: ignore[no-any-return]

    def calico_conf(self) -> dict[str, Any]:
        return self.conflist["plugins"][0]  # type: ignore[no-any-return]


@pytest.fixture
def node(tmp_path) -> Node:  # type: ignore[no-untyped-def]
    return Node(tmp_path)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_etcd_install_writes_links_bundle_and_chained_conflist(node: Node) -> None:
    node.install()
    for name in ("calico", "calico-ipam"):
        link = os.path.join(node.bin_dir, name)
        assert os.readlink(link) == ".pycalico/b1/calico"
        out = subprocess.run([link], input=b"{}", capture_output=True, env={"CNI_COMMAND": "VERSION"}).stdout
        assert json.loads(out)["build"] == "one"
    assert os.path.isfile(os.path.join(node.bin_dir, ".pycalico", "b1", "_internal", "lib.txt"))
    conf = node.conflist
    assert conf["name"] == "k8s-pod-network" and conf["cniVersion"] == "1.0.0"
    assert [p["type"] for p in conf["plugins"]] == ["calico", "portmap"]
    assert conf["plugins"][1] == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    calico = node.calico_conf()
    assert calico["datastore_type"] == "etcdv3" and calico["etcd_endpoints"] == "http://10.0.0.1:2379"
    assert calico["ipam"] == {"type": "calico-ipam"} and calico["nodename"] == "node-1"
    assert calico["mtu"] == 1500 and calico["log_level"] == "info"
    assert "kubernetes" not in calico and "policy" not in calico  # no API server to ask
    assert mode(os.path.join(node.conf_dir, "10-calico.conflist")) == 0o644


def test_bandwidth_on_request_and_settings_from_env(node: Node) -> None:
    node.install("--bandwidth", env={"CNI_MTU": "1410", "LOG_LEVEL": "debug", "LOG_FILE_PATH": "/tmp/x.log",
                                     "KUBERNETES_NODE_NAME": "ignored-flag-wins"})
    conf = node.conflist
    assert [p["type"] for p in conf["plugins"]] == ["calico", "portmap", "bandwidth"]
    assert conf["plugins"][2]["capabilities"] == {"bandwidth": True}
    calico = node.calico_conf()
    assert (calico["mtu"], calico["log_level"], calico["log_file_path"]) == (1410, "debug", "/tmp/x.log")
    assert calico["nodename"] == "node-1"


def test_rerun_changes_nothing(node: Node) -> None:
    assert node.install()
    watched = [os.path.join(node.conf_dir, "10-calico.conflist"), os.path.join(node.bin_dir, "calico"),
               os.path.join(node.bin_dir, ".pycalico", "b1")]
    before = [os.lstat(p) for p in watched]
    assert node.install() == []
    after = [os.lstat(p) for p in watched]
    assert [(s.st_ino, s.st_mtime_ns) for s in before] == [(s.st_ino, s.st_mtime_ns) for s in after]


def test_no_temporary_files_left(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node.install("--plugins-dir", fake_plugins(tmp_path / "plugins"))
    node.install(env={"CNI_MTU": "1400"})
    for directory in (node.bin_dir, node.conf_dir, os.path.join(node.bin_dir, ".pycalico")):
        leftovers = [n for n in os.listdir(directory) if ".tmp" in n or n.startswith(".calico-install-probe")]
        assert leftovers == [], directory


def test_upgrade_switches_links_and_keeps_one_previous_bundle(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node.install()
    for n, build_id in enumerate(("b2", "b3"), start=2):
        node.source = fake_source(tmp_path / f"bundle{n}", build_id, marker=build_id)
        assert os.path.join(node.bin_dir, "calico") in node.install()
    assert os.readlink(os.path.join(node.bin_dir, "calico-ipam")) == ".pycalico/b3/calico"
    assert sorted(os.listdir(os.path.join(node.bin_dir, ".pycalico"))) == ["b2", "b3"]
    out = subprocess.run([os.path.join(node.bin_dir, "calico")], input=b"{}", capture_output=True,
                         env={"CNI_COMMAND": "VERSION"}).stdout
    assert json.loads(out)["build"] == "b3"


def test_plain_executables_and_reference_plugins_are_copied(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node.source = fake_source(tmp_path / "plain", build_id=None)
    node.install("--plugins-dir", fake_plugins(tmp_path / "plugins"), env={"SKIP_CNI_BINARIES": "loopback"})
    names = sorted(os.listdir(node.bin_dir))
    assert names == ["bandwidth", "calico", "calico-ipam", "portmap"]
    for name in names:
        path = os.path.join(node.bin_dir, name)
        assert not os.path.islink(path) and mode(path) == 0o755


def test_update_cni_binaries_false_keeps_existing(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node.install()
    node.source = fake_source(tmp_path / "bundle2", "b2", marker="two")
    changed = node.install(env={"UPDATE_CNI_BINARIES": "false"})
    assert os.readlink(os.path.join(node.bin_dir, "calico")) == ".pycalico/b1/calico"
    assert not any(p.endswith("calico") for p in changed)


def test_etcd_tls_files_installed_private(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    secrets = tmp_path / "calico-secrets"
    secrets.mkdir()
    for name in ("etcd-ca", "etcd-cert"):
        (secrets / name).write_text(f"-----{name}-----\n")
        (secrets / name).chmod(0o644)
    key = tmp_path / "host-key.pem"
    key.write_text("-----key-----\n")
    key.chmod(0o644)
    node.install(env={"TLS_ASSETS_DIR": str(secrets), "ETCD_KEY_FILE": str(key),
                      "ETCD_ENDPOINTS": "https://10.0.0.1:2379"})
    tls_dir = os.path.join(node.conf_dir, "calico-tls")
    assert mode(tls_dir) == 0o700
    calico = node.calico_conf()
    for field, name in (("etcd_ca_cert_file", "etcd-ca"), ("etcd_cert_file", "etcd-cert"),
                        ("etcd_key_file", "etcd-key")):
        path = os.path.join(tls_dir, name)
        assert calico[field] == path
        assert mode(path) == 0o600
    assert open(os.path.join(tls_dir, "etcd-key")).read() == "-----key-----\n"
    assert calico["etcd_endpoints"] == "https://10.0.0.1:2379"


def test_kubernetes_datastore_with_given_kubeconfig(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    kubeconfig.chmod(0o644)
    node.install(env={"ETCD_ENDPOINTS": "", "APPLY_CRDS": "false", "KUBECONFIG": str(kubeconfig)})
    calico = node.calico_conf()
    installed = os.path.join(node.conf_dir, "calico-kubeconfig")
    assert calico["datastore_type"] == "kubernetes" and "etcd_endpoints" not in calico
    assert calico["kubernetes"] == {"kubeconfig": installed}
    assert calico["policy"] == {"type": "k8s"}
    assert mode(installed) == 0o600
    assert not os.path.exists(os.path.join(node.conf_dir, "calico-tls"))


def test_kubernetes_datastore_in_a_pod_writes_service_account_kubeconfig(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("tok-123\n")
    (sa / "ca.crt").write_bytes(b"CA PEM")
    node.install("--serviceaccount-dir", str(sa),
                 env={"ETCD_ENDPOINTS": "", "APPLY_CRDS": "false", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    path = os.path.join(node.conf_dir, "calico-kubeconfig")
    assert mode(path) == 0o600
    kc = yaml.safe_load(open(path))
    assert kc["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA PEM"
    assert kc["users"][0]["user"]["token"] == "tok-123"
    assert kc["current-context"] == "calico-context"
    # IPv6 service address, TLS verification off.
    node.install("--serviceaccount-dir", str(sa),
                 env={"ETCD_ENDPOINTS": "", "APPLY_CRDS": "false", "KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
                      "SKIP_TLS_VERIFY": "true"})
    kc = yaml.safe_load(open(path))
    assert kc["clusters"][0]["cluster"]["server"] == "https://[fd00::1]:443"
    assert kc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] is True


def test_host_root_writes_under_it_and_refers_to_node_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """As in a DaemonSet's init container: the node's / mounted at /host."""
    host = tmp_path / "host"
    source = fake_source(tmp_path / "bundle")
    key = tmp_path / "key.pem"
    key.write_text("k")
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\n")
    argv = ["--host-root", str(host), "--source-dir", source, "--nodename", "n"]
    env = {"ETCD_ENDPOINTS": "https://10.0.0.1:2379", "ETCD_KEY_FILE": str(key), "KUBECONFIG": str(kubeconfig),
           "TLS_ASSETS_DIR": str(tmp_path / "none")}
    install_once(load(argv, env))
    conf = json.load(open(host / "etc/cni/net.d/10-calico.conflist"))["plugins"][0]
    assert conf["etcd_key_file"] == "/etc/cni/net.d/calico-tls/etcd-key"
    assert conf["kubernetes"]["kubeconfig"] == "/etc/cni/net.d/calico-kubeconfig"
    assert (host / "etc/cni/net.d/calico-tls/etcd-key").read_text() == "k"
    assert mode(str(host / "etc/cni/net.d/calico-kubeconfig")) == 0o600
    assert os.readlink(host / "opt/cni/bin/calico") == ".pycalico/b1/calico"


def test_kubernetes_datastore_without_credentials_is_refused(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InstallError, match="needs a kubeconfig"):
        node.install("--serviceaccount-dir", str(tmp_path / "none"), env={"ETCD_ENDPOINTS": ""})


def test_network_config_template(node: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    template = json.dumps({
        "name": "k8s-pod-network", "cniVersion": "0.3.1",
        "plugins": [{"type": "calico", "etcd_endpoints": "__ETCD_ENDPOINTS__", "mtu": "__CNI_MTU__",
                     "nodename": "__KUBERNETES_NODE_NAME__", "log_level": "__LOG_LEVEL__",
                     "ipam": {"type": "calico-ipam"}}],
    }).replace('"__CNI_MTU__"', "__CNI_MTU__")
    node.install(env={"CNI_NETWORK_CONFIG": template, "CNI_MTU": "1440"})
    assert node.conflist["plugins"][0] == {"type": "calico", "etcd_endpoints": "http://10.0.0.1:2379", "mtu": 1440,
                                           "nodename": "node-1", "log_level": "info",
                                           "ipam": {"type": "calico-ipam"}}
    path = tmp_path / "template.json"
    path.write_text('{"name": "x", "plugins": [ __CNI_MTU__ ')
    with pytest.raises(InstallError, match="not valid JSON"):
        node.install(env={"CNI_NETWORK_CONFIG_FILE": str(path)})


def test_conf_name_and_old_conf_removal(node: Node) -> None:
    node.install()
    node.install(env={"CNI_CONF_NAME": "05-calico.conflist"})
    assert sorted(os.listdir(node.conf_dir)) == ["05-calico.conflist"]


def test_missing_directories_are_created(node: Node) -> None:
    assert not os.path.exists(node.bin_dir) and not os.path.exists(node.conf_dir)
    node.install()
    assert os.path.isdir(node.bin_dir) and os.path.isdir(node.conf_dir)


@pytest.fixture
def read_only_dir(tmp_path):  # type: ignore[no-untyped-def]
    """A directory even root cannot write: a read-only bind mount of itself."""
    path = tmp_path / "ro"
    path.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield str(path)
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("which", ["bin", "conf"])
def test_unwritable_directory_is_refused_before_writing_anything(which, read_only_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = fake_source(tmp_path / "bundle")
    other = str(tmp_path / "other")
    bin_dir, conf_dir = (read_only_dir, other) if which == "bin" else (other, read_only_dir)
    proc = subprocess.run(
        [sys.executable, os.path.join(PACKAGING, "install_cni.py"), "--bin-dir", bin_dir, "--conf-dir", conf_dir,
         "--source-dir", source, "--etcd-endpoints", "http://10.0.0.1:2379"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("install: error: ") and read_only_dir in line and "not writable" in line
    assert ("--bin-dir" if which == "bin" else "--conf-dir") in line
    assert not os.path.exists(other) or os.listdir(other) == []  # nothing half-installed


def test_frozen_installer_via_install_link(bundle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The bundle installs itself: no --source-dir needed, no Python needed."""
    bin_dir, conf_dir = str(tmp_path / "bin"), str(tmp_path / "net.d")
    proc = run_frozen_install(bundle, bin_dir, conf_dir, "--etcd-endpoints", "http://10.0.0.1:2379")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plugins"][0]["type"] == "calico"  # the conflist, printed as upstream does
    build_id = open(os.path.join(bundle, "BUILD-ID")).read().strip()
    assert os.readlink(os.path.join(bin_dir, "calico")) == f".pycalico/{build_id}/calico"
    again = run_frozen_install(bundle, bin_dir, conf_dir, "--etcd-endpoints", "http://10.0.0.1:2379")
    assert again.returncode == 0 and "nothing to change" in again.stderr


def test_packaging_name_is_not_shadowed() -> None:
    """Running from the repository root must still import PyPI's ``packaging``
    (pip and setuptools need it): packaging/ has no __init__.py."""
    repo = os.path.dirname(PACKAGING)
    assert not os.path.exists(os.path.join(PACKAGING, "__init__.py"))
    out = subprocess.run([sys.executable, "-c", "import packaging.version, sys; print(packaging.__file__)"],
                         cwd=repo, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": repo})
    assert out.returncode == 0 and "site-packages" in out.stdout, out.stderr
