"""``calicoctl datastore migrate lock | unlock``: set ClusterInformation's
``datastoreReady`` false (locked: CNI refuses new work, so an IPAM report
stays current while ``ipam release --from-report`` runs) or true again."""
from __future__ import annotations

import argparse
from typing import Callable

from datastore.errors import DatastoreError
from datastore.keys import ResourceKey

from calicoctl import actions
from calicoctl.commands import CommandError, session_from


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    lock = args.migrate_command == "lock"
    what = "locking" if lock else "unlocking"
    session = session_from(args)
    backend = session.backend()
    key = ResourceKey("ClusterInformation", "default")
    try:
        actions.ensure_initialized(backend)
        for _ in range(5):
            try:
                current = backend.get(key)
            except DatastoreError as e:
                raise CommandError(f"Error retrieving ClusterInformation for {what}: {e}") from None
            doc = dict(current.value)
            doc["spec"] = {**(doc.get("spec") or {}), "datastoreReady": not lock}
            try:
                backend.update(key, doc, current.revision)
                break
            except DatastoreError as e:
                last = e
        else:
            raise CommandError(f"Error updating ClusterInformation for {what}: {last}")
    finally:
        session.close()
    out("Datastore locked.\n" if lock else "Datastore unlocked.\n")
