"""calico-felix: the per-node agent that programs routes and policy (nftables).

Configuration comes from ``FELIX_*`` environment variables, the config file
(``-c``, default ``/etc/calico/felix.cfg``) and FelixConfiguration resources;
see :mod:`felix.config`. Logs go to stderr (``LogSeverityScreen``) and to
``LogFilePath`` (``none`` disables it).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Optional

from felix.config import FelixConfig, load_config

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "WARN": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL, "PANIC": logging.CRITICAL}
_handlers: dict[str, logging.Handler] = {}


def set_log_levels(cfg: FelixConfig) -> None:
    if "screen" in _handlers:
        _handlers["screen"].setLevel(_LEVELS.get(cfg.log_severity_screen, logging.INFO))
    if "file" in _handlers:
        _handlers["file"].setLevel(_LEVELS.get(cfg.log_severity_file, logging.INFO))


def setup_logging(cfg: FelixConfig) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        root.removeHandler(h)
    screen = logging.StreamHandler(sys.stderr)
    screen.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(screen)
    _handlers["screen"] = screen
    if cfg.log_file_path:
        try:
            os.makedirs(os.path.dirname(cfg.log_file_path) or ".", exist_ok=True)
            handler = logging.FileHandler(cfg.log_file_path)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(handler)
            _handlers["file"] = handler
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot log to %s: %s", cfg.log_file_path, exc)
    for handler in root.handlers:
        handler.addFilter(_quiet_libraries)
    set_log_levels(cfg)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Keep libraries' debug chatter (netlink dumps, HTTP) out of Felix's log."""
    if record.levelno >= logging.WARNING:
        return True
    return not record.name.startswith(("pyroute2", "urllib3", "etcd3gw", "requests"))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="calico-felix", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config-file", default=None, help="config file (INI, [global] section)")
    args = parser.parse_args(argv)

    cfg = load_config(config_file=args.config_file)
    setup_logging(cfg)
    log = logging.getLogger("felix")
    log.info("calico-felix starting on host %s", cfg.hostname)

    from datastore.config import DatastoreConfig, connect
    from felix.daemon import Daemon

    ds = DatastoreConfig.from_env()  # KUBECONFIG etc. for the Kubernetes datastore
    ds.datastore_type = cfg.datastore_type
    ds.etcd_endpoints = cfg.etcd_endpoints
    ds.etcd_key_file = cfg.etcd_key_file or None
    ds.etcd_cert_file = cfg.etcd_cert_file or None
    ds.etcd_ca_cert_file = cfg.etcd_ca_file or None
    try:
        backend = connect(ds)
    except ValueError as exc:
        log.error("cannot use the datastore: %s", exc)
        sys.exit(1)
    daemon = Daemon(backend, cfg, config_file=args.config_file)

    def on_signal(signum: int, frame: object) -> None:
        log.info("received signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.run()
    finally:
        backend.close()


if __name__ == "__main__":
    main()
