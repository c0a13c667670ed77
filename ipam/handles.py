"""Handle reference counts: ``{"block": {"<cidr>": n}}`` per handle id.

The allocator increments a handle *before* it writes the block, so a crash
in between leaves a handle that over-counts (found by the checker, freed by
DEL or GC) and never an allocation that no handle knows about.
"""
from __future__ import annotations

import copy
import logging

from datastore.errors import AlreadyExists, Conflict, NotFound

from ipam.retry import Deadline, attempts
from ipam.values import IPAMHandle
from ipam.store import Store, Versioned

log = logging.getLogger(__name__)


def increment(store: Store, handle_id: str, cidr: str, num: int, deadline: Deadline | None = None,
              *, likely_new: bool = False) -> None:
    """Add ``num`` for ``cidr`` to the handle, creating it if need be.
    ``likely_new``: try the create first (one round trip for a new handle)."""
    if likely_new:
        try:
            store.create_handle(handle_id, {cidr: num})
            return
        except AlreadyExists:
            pass
    for _ in attempts(f"increment handle {handle_id}", deadline):
        try:
            current = store.get_handle(handle_id)
        except NotFound:
            try:
                store.create_handle(handle_id, {cidr: num})
                return
            except AlreadyExists:
                continue
        handle = current.value
        handle.block[cidr] = handle.block.get(cidr, 0) + num
        try:
            store.update_handle(handle, current.revision)
            return
        except (Conflict, NotFound):
            continue


def decrement(store: Store, handle_id: str, cidr: str, num: int | None, deadline: Deadline | None = None,
              *, known: Versioned[IPAMHandle] | None = None) -> Versioned[IPAMHandle] | None:
    """Take ``num`` (all, when None) of ``cidr`` off the handle; delete the
    handle once it counts nothing. A missing handle is fine. ``known``: the
    handle as last read, tried first (saves a read when nothing changed it).
    Returns the handle as written (None: deleted or missing)."""
    for _ in attempts(f"decrement handle {handle_id}", deadline):
        if known is not None:
            current, known = known, None
            current = Versioned(copy.deepcopy(current.value), current.revision)
        else:
            try:
                current = store.get_handle(handle_id)
            except NotFound:
                return None
        handle = current.value
        have = handle.block.get(cidr, 0)
        left = 0 if num is None else have - num
        if num is not None and have < num:
            log.warning("handle %s counts %d in %s, asked to release %d", handle_id, have, cidr, num)
        if left > 0:
            handle.block[cidr] = left
        else:
            handle.block.pop(cidr, None)
        try:
            if handle.block:
                return store.update_handle(handle, current.revision)
            store.delete_handle(handle_id, current.revision)
            return None
        except NotFound:
            return None
        except Conflict:
            continue
    return None
