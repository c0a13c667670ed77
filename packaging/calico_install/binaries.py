"""Put the plugin executables into the CNI bin directory.

A frozen onedir bundle (a directory with ``BUILD-ID``) cannot be copied in as
two loose files: its executable needs its ``_internal/`` next to it. It is
copied whole to ``<bin>/.pycalico/<build id>/`` (under a temporary name, then
renamed), and ``<bin>/calico`` and ``<bin>/calico-ipam`` become relative
symlinks to its executable, each switched with one atomic rename. A runtime
exec'ing a plugin during an upgrade gets the old bundle or the new one. The
previous bundle is kept (a plugin started just before the switch may still
be loading from it); older ones are removed.

Any other source (a directory with plain ``calico`` / ``calico-ipam``
executables) and the reference plugins (``--plugins-dir``) are copied file
by file, atomically.
"""
from __future__ import annotations

import logging
import os
import shutil

from calico_install import files
from calico_install.config import InstallConfig
from calico_install.errors import InstallError

log = logging.getLogger("install")
PLUGINS = ("calico", "calico-ipam")
STORE = ".pycalico"
KEEP_BUNDLES = 2


def install(cfg: InstallConfig) -> list[str]:
    """Install; return the paths that changed."""
    changed: list[str] = []
    if not cfg.source_dir:
        raise InstallError("no plugin source: run the installer from the frozen bundle "
                           "(its 'install' link) or pass --source-dir / PYCALICO_BUNDLE_DIR")
    if not os.path.isdir(cfg.source_dir):
        raise InstallError(f"plugin source {cfg.source_dir} is not a directory")
    build_id = _build_id(cfg.source_dir)
    if build_id:
        _install_bundle(cfg, build_id, changed)
    else:
        for name in PLUGINS:
            _install_file(cfg, os.path.join(cfg.source_dir, name), name, changed, required=True)
    if cfg.plugins_dir:
        if not os.path.isdir(cfg.plugins_dir):
            raise InstallError(f"plugins dir {cfg.plugins_dir} is not a directory")
        for name in sorted(os.listdir(cfg.plugins_dir)):
            src = os.path.join(cfg.plugins_dir, name)
            if name not in PLUGINS and os.path.isfile(src) and os.access(src, os.X_OK):
                _install_file(cfg, src, name, changed, required=False)
    return changed


def _build_id(source: str) -> str | None:
    try:
        with open(os.path.join(source, "BUILD-ID")) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return None
    if not value or "/" in value or value.startswith("."):
        raise InstallError(f"{source}/BUILD-ID is malformed: {value!r}")
    return value


def _wanted(cfg: InstallConfig, name: str) -> bool:
    if name in cfg.skip_binaries:
        log.info("skipping %s (SKIP_CNI_BINARIES)", name)
        return False
    if not cfg.update_binaries and os.path.lexists(os.path.join(cfg.local(cfg.bin_dir), name)):
        log.info("keeping existing %s (UPDATE_CNI_BINARIES=false)", name)
        return False
    return True


def _install_bundle(cfg: InstallConfig, build_id: str, changed: list[str]) -> None:
    bin_dir = cfg.local(cfg.bin_dir)
    store = os.path.join(bin_dir, STORE)
    dest = os.path.join(store, build_id)
    wanted = [name for name in PLUGINS if _wanted(cfg, name)]
    if not wanted:
        return
    if not os.path.isfile(os.path.join(cfg.source_dir or "", "calico")):
        raise InstallError(f"{cfg.source_dir} has a BUILD-ID but no calico executable")
    if not os.path.isdir(dest):
        os.makedirs(store, exist_ok=True)
        tmp = os.path.join(store, f".tmp-{build_id}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cfg.source_dir or "", tmp, symlinks=True)
        os.replace(tmp, dest)
        changed.append(dest)
        log.info("copied bundle %s to %s", build_id, dest)
    target = os.path.join(STORE, build_id, "calico")
    for name in wanted:
        link = os.path.join(bin_dir, name)
        if os.path.isdir(link) and not os.path.islink(link):
            raise InstallError(f"{link} is a directory; remove it first")
        if files.symlink(target, link):
            changed.append(link)
            log.info("installed %s -> %s", link, target)
    _prune(store, bin_dir, keep=build_id)


def _prune(store: str, bin_dir: str, keep: str) -> None:
    """Keep the current bundle, anything still linked, and the previous one."""
    linked = set()
    for name in os.listdir(bin_dir):
        path = os.path.join(bin_dir, name)
        if os.path.islink(path):
            parts = os.readlink(path).split(os.sep)
            if len(parts) >= 2 and parts[0] == STORE:
                linked.add(parts[1])
    bundles = sorted(
        ((os.path.getmtime(os.path.join(store, n)), n) for n in os.listdir(store)
         if not n.startswith(".") and os.path.isdir(os.path.join(store, n))),
        reverse=True,
    )
    survivors = {keep} | linked | {n for _, n in bundles[:KEEP_BUNDLES]}
    for _, name in bundles:
        if name not in survivors:
            shutil.rmtree(os.path.join(store, name), ignore_errors=True)
            log.info("removed old bundle %s", name)


def _install_file(cfg: InstallConfig, src: str, name: str, changed: list[str], required: bool) -> None:
    if not os.path.isfile(src):
        if required:
            raise InstallError(f"{src} does not exist")
        return
    if not _wanted(cfg, name):
        return
    dst = os.path.join(cfg.local(cfg.bin_dir), name)  # a bundle link there is replaced by the rename
    mode = (os.stat(src).st_mode & 0o7777) | 0o755
    if files.copy_file(src, dst, mode):
        changed.append(dst)
        log.info("installed %s", dst)
