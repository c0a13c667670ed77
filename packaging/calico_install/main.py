"""``install``: the installer's command line and its one pass over the node.

Order (as upstream): check every target directory is writable before
touching anything, credentials, (kubernetes datastore) the CRDs, established,
executables, then the conflist last (a runtime picks the network up as soon
as the conflist appears, so everything it refers to must already be in place). The written conflist is printed on
stdout; logs go to stderr. Exit status 1 with one clear line on any error.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from calico_install import binaries, conflist, credentials, files, manifests
from calico_install.config import InstallConfig, load
from calico_install.errors import InstallError

log = logging.getLogger("install")


def check_dirs(cfg: InstallConfig) -> None:
    files.ensure_writable_dir(cfg.local(cfg.bin_dir), "CNI bin directory",
                              "Mount it read-write or pick another with --bin-dir / CNI_BIN_DIR.")
    files.ensure_writable_dir(cfg.local(cfg.conf_dir), "CNI config directory",
                              "Mount it read-write or pick another with --conf-dir / CNI_NET_DIR.")


def network_config(cfg: InstallConfig, creds: credentials.Credentials) -> bytes:
    template = cfg.network_config
    if cfg.network_config_file:
        try:
            with open(cfg.network_config_file, encoding="utf-8") as f:
                template = f.read()
        except OSError as exc:
            raise InstallError(f"cannot read CNI_NETWORK_CONFIG_FILE {cfg.network_config_file}: "
                               f"{exc.strerror}") from None
    if template:
        conf = conflist.render_template(template, cfg, creds.tls, creds.kubeconfig, creds.token)
    else:
        conf = conflist.default_conflist(cfg, creds.tls, creds.kubeconfig)
    return conflist.render(conf)


def verify_plugin(cfg: InstallConfig) -> str:
    """Exec the installed calico once (VERSION): a broken bundle fails the install, not a pod."""
    path = os.path.join(cfg.local(cfg.bin_dir), "calico")
    try:
        proc = subprocess.run([path], input=b'{"cniVersion": "1.0.0"}', capture_output=True, timeout=60,
                              env={"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except OSError as exc:
        raise InstallError(f"the installed {path} cannot be executed: {exc.strerror}") from None
    if proc.returncode != 0 or b"supportedVersions" not in proc.stdout:
        raise InstallError(f"the installed {path} does not work: {proc.stdout[-300:]!r} "
                           f"{proc.stderr[-500:]!r}")
    return proc.stdout.decode().strip()


def apply_manifests(cfg: InstallConfig, creds: credentials.Credentials) -> list[str]:
    if not cfg.apply_crds:
        return []
    assert creds.kubeconfig  # the kubernetes datastore always has one (credentials.install)
    return manifests.apply_all(cfg.local(creds.kubeconfig), cfg.manifests_dir or manifests.default_dir(),
                               cfg.apply_rbac)


def install_once(cfg: InstallConfig, with_manifests: bool = True) -> tuple[bytes, list[str]]:
    """One idempotent pass; returns the conflist and the paths (and API objects) that changed."""
    check_dirs(cfg)
    creds = credentials.install(cfg)
    changed = list(creds.changed)
    if with_manifests:
        changed += apply_manifests(cfg, creds)
    changed += binaries.install(cfg)
    if cfg.verify and "calico" not in cfg.skip_binaries:
        log.info("CNI plugin version: %s", verify_plugin(cfg))
    data = network_config(cfg, creds)
    path = os.path.join(cfg.local(cfg.conf_dir), cfg.conf_name)
    if files.write_file(path, data, 0o644):
        changed.append(path)
    if cfg.old_conf_name != cfg.conf_name:
        old = os.path.join(cfg.local(cfg.conf_dir), cfg.old_conf_name)
        if files.remove(old):
            changed.append(old)
            log.info("removed old config %s", old)
    return data, changed


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] install: %(message)s")
    try:
        cfg = load(argv)
        data, changed = install_once(cfg)
    except InstallError as exc:
        sys.stderr.write(f"install: error: {exc}\n")
        sys.exit(1)
    log.info("%s: %s", "changed" if changed else "nothing to change", ", ".join(changed) or "all up to date")
    sys.stdout.write(data.decode())
    sys.stdout.flush()
    if cfg.sleep:
        _resync_forever(cfg)
    sys.exit(0)


def _resync_forever(cfg: InstallConfig) -> None:
    """SLEEP=true: stay up (as a pod's container) and reapply when mounted inputs change."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("done; SLEEP=true: re-checking every %.0fs", cfg.resync_seconds)
    while True:
        time.sleep(cfg.resync_seconds)
        try:
            _, changed = install_once(cfg, with_manifests=False)  # CRDs: once, at start
            if changed:
                log.info("updated: %s", ", ".join(changed))
        except InstallError as exc:
            log.error("%s", exc)
