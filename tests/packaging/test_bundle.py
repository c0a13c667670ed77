"""The frozen bundle: standalone, dispatching on argv[0], lean hot paths."""
from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from tests.packaging.conftest import PACKAGING
from tests.support.cni_exec import exec_plugin
from tests.support.netns import Netns, cali_links
from tests.support.pools import create_pool

VERSION_STDIN = b'{"cniVersion": "1.0.0"}'
# Imports that must never happen before the command needs them.
HEAVY = ("pydantic", "pyroute2", "etcd3gw", "requests", "kubernetes", "yaml", "datastore.kubernetes")


def _python_dirs() -> list[str]:
    """Every place a Python could come from on this machine."""
    dirs = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    dirs |= set(glob.glob("/usr/lib/python3*")) | set(glob.glob("/usr/local/lib/python3*"))
    return sorted(d for d in dirs if os.path.isdir(d) and d not in ("/", "/usr", "/usr/local"))


def test_runs_with_no_python_on_the_machine(bundle: str) -> None:
    """Hide every Python installation (venv, pyenv, Debian's) behind empty
    tmpfs mounts in a private mount namespace, clear the environment, and run
    each program of the bundle."""
    hide = "; ".join(f"mount -t tmpfs none {shlex.quote(d)}" for d in _python_dirs())
    checks = {
        "calico": f"echo '{VERSION_STDIN.decode()}' | env -i CNI_COMMAND=VERSION {bundle}/calico",
        "calico-ipam": f"echo '{VERSION_STDIN.decode()}' | env -i CNI_COMMAND=VERSION {bundle}/calico-ipam",
        "calicoctl": f"env -i {bundle}/calicoctl --help",
        "install": f"env -i {bundle}/install --help",
        "calico-felix": f"env -i {bundle}/calico-felix --help",
        "calico-confd": f"env -i {bundle}/calico-confd --help",
    }
    for name, cmd in checks.items():
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{hide}; {cmd}"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{name}: {proc.stdout} {proc.stderr}"
        if name in ("calico", "calico-ipam"):
            assert json.loads(proc.stdout)["supportedVersions"], name
        else:
            assert "usage" in proc.stdout.lower(), name


def test_argv0_picks_the_program(bundle: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Links elsewhere (as install makes them) still find the bundle and
    dispatch on their own name."""
    for name in ("calico", "calico-ipam", "calicoctl"):
        os.symlink(os.path.join(bundle, "calico"), tmp_path / name)
    ipam = subprocess.run([str(tmp_path / "calico-ipam"), "--version"], capture_output=True, text=True, env={})
    assert ipam.returncode == 0 and "calico-ipam" in ipam.stdout
    ctl = subprocess.run([str(tmp_path / "calicoctl"), "version"], capture_output=True, text=True, env={})
    assert "Client Version" in ctl.stdout
    calico = subprocess.run([str(tmp_path / "calico")], input=b"{}", capture_output=True, env={})
    assert calico.returncode == 1 and b"CNI_COMMAND" in calico.stdout  # a CNI error, as JSON on stdout


def test_version_imports_nothing_heavy(bundle: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("calico", "calico-ipam"):
        proc = subprocess.run([os.path.join(bundle, name)], input=VERSION_STDIN, capture_output=True,
                              env={"CNI_COMMAND": "VERSION", "PYCALICO_IMPORT_TRACE": str(tmp_path)})
        assert proc.returncode == 0
    traces = glob.glob(str(tmp_path / "*.modules"))
    assert len(traces) == 2
    for trace in traces:
        modules = open(trace).read().split()
        assert "cni.version" in modules
        assert "cni.skel" not in modules and "dataclasses" not in modules  # answered before the CNI machinery
        assert [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY] == [], trace
        assert "multiprocessing" not in modules  # PyInstaller's runtime hooks are dropped


@pytest.mark.etcd
@pytest.mark.netns
def test_etcd_add_and_del_never_import_kubernetes(frozen_install, etcd_backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    create_pool(etcd_backend, "pkg-pool", "10.124.0.0/16")
    conf = frozen_install.conflist
    netconf = {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}
    trace = tmp_path / "trace"
    trace.mkdir()
    env = {"PYCALICO_IMPORT_TRACE": str(trace)}
    cid = f"pkg{os.urandom(4).hex()}"
    with Netns() as ns:
        add = exec_plugin(frozen_install.bin_dir, "calico", "ADD", netconf, container_id=cid, netns=ns.path,
                          extra_env=env)
        assert add.ok, add.stdout + add.stderr
        host_if = add.json["interfaces"][0]["name"]
        assert host_if in cali_links()
        delete = exec_plugin(frozen_install.bin_dir, "calico", "DEL", netconf, container_id=cid, netns=ns.path,
                             extra_env=env)
        assert delete.ok, delete.stdout + delete.stderr
    assert host_if not in cali_links()
    traces = sorted(os.listdir(trace))
    # calico-ipam ran inside calico (same bundle): no second process.
    assert sum(t.startswith("calico-ipam.") for t in traces) == 0
    assert sum(t.startswith("calico.") for t in traces) == 2
    for name in traces:
        modules = set(open(trace / name).read().split())
        assert {"datastore.etcd", "ipam.plugin", "cni.netlink"} <= modules, name
        assert not [m for m in modules if m.split(".")[0] == "kubernetes" or m.startswith("datastore.kubernetes")], name
        assert "pyroute2" not in modules, name  # cni.netlink speaks rtnetlink itself


def bundled_modules(bundle: str) -> set[str]:
    """Module names in the bundle: .pyc files on disk (noarchive onedir) or the PYZ archive."""
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(os.path.join(bundle, "calico"))
    names = set(archive.open_embedded_archive("PYZ.pyz").toc) if "PYZ.pyz" in archive.toc else set()
    internal = os.path.join(bundle, "_internal")
    for root, _, files in os.walk(internal):
        for f in files:
            if f.endswith(".pyc"):
                rel = os.path.relpath(os.path.join(root, f[:-4]), internal).replace(os.sep, ".")
                names.add(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return names


def test_bundle_contents(bundle: str) -> None:
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(os.path.join(bundle, "calico"))
    modules = bundled_modules(bundle)
    # Excluded: build-time only, and their runtime hooks cost ~50 ms per exec.
    assert not {"setuptools", "pkg_resources", "pytest", "PyInstaller"} & modules
    # Kept although they look optional: pyroute2 imports sqlite3 and unittest,
    # pydantic-core needs decimal.
    assert {"sqlite3", "unittest", "decimal"} <= modules
    # Loaded through importlib (datastore.kinds.model_for): hidden imports.
    assert {"datastore.models.ippool", "datastore.models.endpoint", "calico_install.main"} <= modules
    assert not [s for s in archive.toc if s.startswith("pyi_rth_")]
    dynload = os.listdir(os.path.join(bundle, "_internal", "python3.11", "lib-dynload"))
    assert any(n.startswith("_sqlite3") for n in dynload) and any(n.startswith("_decimal") for n in dynload)
    from build_bundle import LINKS

    for link in LINKS:
        assert os.readlink(os.path.join(bundle, link)) == "calico"
    assert open(os.path.join(bundle, "BUILD-ID")).read().strip() in os.path.basename(bundle)


def test_rebuild_without_changes_is_a_cache_hit(bundle: str) -> None:
    if os.environ.get("PYCALICO_BUNDLE"):
        pytest.skip("bundle given by PYCALICO_BUNDLE")
    build = os.path.join(PACKAGING, "build")
    # The first call rebuilds only if a source changed since the fixture built (shared checkout).
    first = subprocess.run([build], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    from build_bundle import build_hash

    before = build_hash("onedir")
    start = time.monotonic()
    second = subprocess.run([build], capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - start
    assert second.returncode == 0, second.stderr
    if build_hash("onedir") != before or not first.stdout.strip().endswith(before):
        pytest.skip("sources changed while the test ran (shared checkout being edited)")
    assert elapsed < 10
    assert second.stdout == first.stdout and "up to date" in second.stderr
    assert os.path.realpath(os.path.join(os.path.dirname(second.stdout.strip()), "current")) == second.stdout.strip()
