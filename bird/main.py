"""calico-confd: keep BIRD configured from the Calico datastore.

Usage::

    calico-confd [run] [--oneshot] [--no-bird]   # the watch loop (default)
    calico-confd render [--node NAME]            # print bird.cfg once
    calico-confd status                          # peer table from BIRD's socket

Settings (flags override the environment; upstream's names where it has them):

=========================  =============================  =======================================
flag                       environment                    default
=========================  =============================  =======================================
``--node``                 ``NODENAME``                   /var/lib/calico/nodename, else hostname
``--config``               ``CALICO_BIRD_CONFIG``         /etc/calico/confd/config/bird.cfg
``--socket``               ``CALICO_BIRD_SOCKET``         /var/run/calico/bird.ctl
``--bird``                 ``CALICO_BIRD_BINARY``         bird
``--bird-log``             ``CALICO_BIRD_LOG``            BIRD's output goes to confd's stderr
``--no-bird``              ``CALICO_CONFD_MANAGE_BIRD``   manage BIRD (start, reconfigure, restart)
\\                         ``CALICO_ROUTER_ID``           node IPv4 (``hash``: from the node name)
\\                         ``BGP_LOGSEVERITYSCREEN``      BGPConfiguration's, else Info
\\                         ``CALICO_BGP_SECRETS_DIR``     /etc/calico/confd/secrets
\\                         ``CALICO_BGP_CONNECT_DELAY_TIME`` / ``_CONNECT_RETRY_TIME`` 2 / 5 s
\\                         ``CALICO_BGP_ERROR_WAIT_TIME`` ``5,30``
\\                         ``CALICO_BGP_HOLD_TIME`` / ``CALICO_BGP_KEEPALIVE_TIME``  BIRD's (240 / 80 s)
\\                         ``CALICO_BIRD_SCAN_TIME``      2 s
\\                         ``CALICO_BIRD_GRACEFUL_RESTART_WAIT`` 30 s (after a BIRD restart)
=========================  =============================  =======================================

The datastore comes from ``DATASTORE_TYPE``, ``ETCD_ENDPOINTS``, ... as for
every component (:mod:`datastore.config`). Logs go to stderr
(``CALICO_CONFD_LOGLEVEL``, default info).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Mapping

DEFAULT_CONFIG = "/etc/calico/confd/config/bird.cfg"
DEFAULT_SOCKET = "/var/run/calico/bird.ctl"
DEFAULT_SECRETS_DIR = "/etc/calico/confd/secrets"


def options_from_env(env: Mapping[str, str]):  # type: ignore[no-untyped-def]
    from bird.render import BirdOptions

    def num(name: str, default: int | None) -> int | None:
        value = env.get(name)
        return int(value) if value else default

    error_wait = env.get("CALICO_BGP_ERROR_WAIT_TIME", "5,30").split(",")
    return BirdOptions(
        scan_time=num("CALICO_BIRD_SCAN_TIME", 2) or 2,
        connect_delay_time=num("CALICO_BGP_CONNECT_DELAY_TIME", 2) or 0,
        connect_retry_time=num("CALICO_BGP_CONNECT_RETRY_TIME", 5) or 5,
        error_wait_time=(int(error_wait[0]), int(error_wait[-1])),
        hold_time=num("CALICO_BGP_HOLD_TIME", None),
        keepalive_time=num("CALICO_BGP_KEEPALIVE_TIME", None),
        router_id=env.get("CALICO_ROUTER_ID") or None,
        log_severity=env.get("BGP_LOGSEVERITYSCREEN") or None,
        graceful_restart_wait=num("CALICO_BIRD_GRACEFUL_RESTART_WAIT", 30) or 30,
    )


def secrets_from_dir(directory: str):  # type: ignore[no-untyped-def]
    """BGP passwords from a mounted-secret layout: ``<dir>/<secret>/<key>``."""

    def lookup(name: str, key: str) -> str | None:
        if "/" in name or "/" in key or name.startswith(".") or key.startswith("."):
            return None
        try:
            with open(os.path.join(directory, name, key), encoding="utf-8") as f:
                return f.read().rstrip("\n")
        except OSError:
            return None

    return lookup


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="calico-confd", description="Render BIRD's config from the Calico datastore and keep BIRD running it.")
    p.add_argument("command", nargs="?", default="run", choices=("run", "render", "status"))
    p.add_argument("--node", default=None, help="this node's name (NODENAME)")
    p.add_argument("--config", default=env.get("CALICO_BIRD_CONFIG", DEFAULT_CONFIG))
    p.add_argument("--socket", default=env.get("CALICO_BIRD_SOCKET", DEFAULT_SOCKET))
    p.add_argument("--bird", default=env.get("CALICO_BIRD_BINARY", "bird"))
    p.add_argument("--bird-log", default=env.get("CALICO_BIRD_LOG") or None)
    p.add_argument("--no-bird", action="store_true",
                   default=env.get("CALICO_CONFD_MANAGE_BIRD", "true").lower() == "false",
                   help="only write the config; do not start or reconfigure BIRD")
    p.add_argument("--oneshot", action="store_true", help="apply the config once and exit (confd -onetime)")
    p.add_argument("--secrets-dir", default=env.get("CALICO_BGP_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    return p


def _setup_logging() -> None:
    level = os.environ.get("CALICO_CONFD_LOGLEVEL", "info").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s [%(levelname)s][%(process)d] confd %(name)s: %(message)s",
    )
    for noisy in ("urllib3", "etcd3gw"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _setup_logging()
    if args.command == "status":
        from bird.status import node_status

        text = node_status(args.socket)
        print(text)
        sys.exit(1 if text.startswith("Calico process is not running") else 0)

    from bird.confd import Confd
    from bird.daemon import BirdDaemon
    from datastore.config import DatastoreConfig, connect, node_name

    node = node_name(args.node)
    options = options_from_env(os.environ)
    secrets = secrets_from_dir(args.secrets_dir)
    try:
        backend = connect(DatastoreConfig.from_env())
    except ValueError as exc:
        sys.stderr.write(f"calico-confd: {exc}\n")
        sys.exit(2)

    if args.command == "render":
        from bird.render import render
        from bird.state import BGPState, watch_options

        state = BGPState()
        for opts in watch_options(node):
            for kv in backend.list(opts).items:
                state.apply(kv.key, kv.value)
        sys.stdout.write(render(state, node, options, secrets))
        return

    daemon = None
    if not args.no_bird:
        daemon = BirdDaemon(args.config, args.socket, binary=args.bird, log_path=args.bird_log)
    confd = Confd(backend, node, args.config, daemon, options, secrets)

    def _term(signum: int, frame: object) -> None:
        confd.stop()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    logging.getLogger("calico-confd").info("node %s: config %s, BIRD socket %s", node, args.config, args.socket)
    sys.exit(confd.run(oneshot=args.oneshot))


if __name__ == "__main__":
    main()
