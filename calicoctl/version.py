"""``calicoctl version``: the client version, and the cluster's version and
type from the ClusterInformation resource (which needs the datastore)."""
from __future__ import annotations

import argparse
import re
import time
from typing import Callable

GIT_REVISION = "unknown"  # replaced by release builds


def client_version() -> str:
    try:
        from importlib.metadata import version

        return "v" + version("pycalico")
    except Exception:  # noqa: BLE001 - frozen builds without metadata
        from calicoctl import __version__

        return "v" + __version__


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``1s``, ``1m30s``, ``500ms``) in seconds."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    return total


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    from datastore.errors import DatastoreError
    from datastore.keys import ResourceKey

    from calicoctl.commands import CommandError, session_from

    poll = 0.0
    if args.poll:
        try:
            poll = parse_duration(args.poll)
        except ValueError:
            raise CommandError(f"Invalid poll duration specified: {args.poll}") from None
    out(f"Client Version:    {client_version()}\n")
    out(f"Git commit:        {GIT_REVISION}\n")
    if args.client:
        return
    session = session_from(args)
    backend = session.backend()
    shown = ("", "")
    try:
        while True:
            error = ""
            try:
                kv = backend.get(ResourceKey("ClusterInformation", "default"))
                spec = kv.value.get("spec") or {}
                version = spec.get("calicoVersion") or "unknown"
                ctype = spec.get("clusterType") or "unknown"
                if version != shown[0]:
                    out(f"Cluster Version:   {version}\n")
                if ctype != shown[1]:
                    out(f"Cluster Type:      {ctype}\n")
                shown = (version, ctype)
            except DatastoreError as e:
                from datastore.errors import NotFound

                detail = ("resource does not exist: ClusterInformation(default) with error: <nil>"
                          if isinstance(e, NotFound) else str(e))
                error = f"Unable to retrieve Cluster Version or Type: {detail}"
                shown = ("", "")
            if not poll:
                if error:
                    raise CommandError(error)
                return
            if error:
                import sys

                sys.stderr.write(error + "\n")
            time.sleep(poll)
    finally:
        session.close()
