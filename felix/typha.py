"""Where Felix gets its datastore updates: Typha when ``TyphaAddr`` is set, else the datastore.

Both sources have the same interface (``on_updates`` / ``on_status``,
``start()`` / ``stop()``) and deliver the same keys and values, so the
calculation layer cannot tell them apart. Settings (upstream names, from the
environment as ``FELIX_<NAME>``): TyphaAddr, TyphaCAFile, TyphaCertFile,
TyphaKeyFile, TyphaCN, TyphaURISAN, TyphaReadTimeout (s, default 30).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from datastore.backend import Backend
from datastore.keys import ListOptions
from datastore.syncer import OnStatus, OnUpdates, Syncer

log = logging.getLogger(__name__)


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(f"FELIX_{name.upper()}", "") or env.get(f"FELIX_{name}", "")


def make_syncer(env: Mapping[str, str], node: str, backend: Backend, options: list[ListOptions],
                on_updates: OnUpdates, on_status: OnStatus) -> Any:
    addr = _get(env, "TyphaAddr")
    if not addr:
        return Syncer(backend, options, on_updates, on_status)
    from typha.client import TyphaSyncer

    log.info("using Typha at %s", addr)
    return TyphaSyncer(
        addr, node, on_updates, on_status,
        ca_file=_get(env, "TyphaCAFile"), cert_file=_get(env, "TyphaCertFile"),
        key_file=_get(env, "TyphaKeyFile"), server_cn=_get(env, "TyphaCN"),
        server_uri_san=_get(env, "TyphaURISAN"),
        read_timeout=float(_get(env, "TyphaReadTimeout") or 30),
    )
