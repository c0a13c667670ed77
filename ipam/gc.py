"""CNI GC for calico-ipam: release this node's allocations whose attachment
the runtime no longer knows.

The runtime passes ``cni.dev/valid-attachments`` (``[{"containerID": ...,
"ifname": ...}]``). A handle of this network (``<name>.<containerID>``) is
released when its allocations say ``node: <this node>`` and its
(containerID, interface) is not in that list. Handles of this network that
no allocation refers to at all (a crash between the handle and the block
write) are released too when every block they count is this node's (or
gone): they are re-checked after a short grace period so an assignment in
flight on another node that borrowed from our block is never cut short.

Runs under the host lock, so no assignment of this node is in flight; it also
finishes this node's interrupted affinity claims and releases.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from datastore.errors import Conflict, NotFound

from ipam import blocks as blk
from ipam.claim import CONFIRMED, PENDING, PENDING_DELETION, release_affinity, set_state
from ipam.release import release_by_handle
from ipam.retry import Deadline
from ipam.store import Store

log = logging.getLogger(__name__)

ORPHAN_GRACE = 1.0  # seconds between the two looks at a handle without allocations
INTERFACE_ATTR = "interface"


@dataclass
class GCResult:
    released_handles: list[str] = field(default_factory=list)
    released_ips: list[str] = field(default_factory=list)
    fixed_affinities: list[str] = field(default_factory=list)


def _valid_key(container_id: str, ifname: str | None, valid: set[tuple[str, str]], valid_ids: set[str]) -> bool:
    if ifname:
        return (container_id, ifname) in valid or (container_id, "") in valid
    return container_id in valid_ids


def collect(
    store: Store, node: str, network: str, valid: set[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """(handles with allocations to release, handles without allocations that may be)."""
    prefix = f"{network}."
    valid_ids = {cid for cid, _ in valid}
    parsed = {b.value.cidr: b.value for b in store.list_blocks()}
    allocated: set[str] = set()
    stale: set[str] = set()
    for block in parsed.values():
        for ordinal, index in enumerate(block.allocations):
            if index is None:
                continue
            attr = blk.attribute_of(block, ordinal)
            if attr is None or not attr.handle_id:
                continue
            allocated.add(attr.handle_id)
            secondary = attr.secondary or {}
            if not attr.handle_id.startswith(prefix) or secondary.get("node") != node:
                continue
            cid = attr.handle_id[len(prefix):]
            if not _valid_key(cid, secondary.get(INTERFACE_ATTR), valid, valid_ids):
                stale.add(attr.handle_id)
    orphans = []
    for h in store.list_handles():
        hid = h.value.handle_id or ""
        if not hid.startswith(prefix) or hid in allocated:
            continue
        if hid[len(prefix):] in valid_ids:
            continue
        if all(c not in parsed or blk.is_affine_to(parsed[c], node) for c in h.value.block):
            orphans.append(hid)
    return sorted(stale), sorted(orphans)


def _orphan_revision(store: Store, handle_id: str, node: str) -> str | None:
    """The handle's revision if it still has no allocation (else None)."""
    try:
        current = store.get_handle(handle_id)
    except NotFound:
        return None
    for cidr in current.value.block:
        try:
            block = store.get_block(cidr).value
        except NotFound:
            continue
        if not blk.is_affine_to(block, node) or blk.ordinals_for_handle(block, handle_id):
            return None
    return current.revision


def fix_affinities(store: Store, node: str, deadline: Deadline | None) -> list[str]:
    """Finish this node's interrupted claims (pending) and releases (pendingDeletion)."""
    fixed = []
    for key, aff in store.list_affinities(node):
        state = aff.value.state
        if state == CONFIRMED and not aff.value.deleted:
            continue
        try:
            block = store.get_block(key.cidr).value
        except NotFound:
            block = None
        if state == PENDING and block is not None and blk.is_affine_to(block, node):
            set_state(store, node, key.cidr, CONFIRMED, deadline)
        elif state == PENDING_DELETION and block is not None and blk.is_affine_to(block, node):
            release_affinity(store, node, key.cidr, require_empty=True, deadline=deadline)
        else:
            store.delete_affinity(node, key.cidr, aff.revision)
        fixed.append(f"{key.cidr} ({state})")
    return fixed


def gc(
    store: Store,
    node: str,
    network: str,
    valid: set[tuple[str, str]],
    deadline: Deadline | None = None,
    grace: float = ORPHAN_GRACE,
) -> GCResult:
    result = GCResult()
    stale, orphans = collect(store, node, network, valid)
    if orphans and grace > 0:
        time.sleep(grace)
    for handle_id in stale:
        released = release_by_handle(store, handle_id, deadline)
        if released.found:
            result.released_handles.append(handle_id)
            result.released_ips += released.released
    for handle_id in orphans:
        # Never touch blocks for these: delete the handle only if it has not
        # changed since it was seen without allocations.
        revision = _orphan_revision(store, handle_id, node)
        if revision is None:
            continue
        try:
            store.delete_handle(handle_id, revision)
            result.released_handles.append(handle_id)
        except (NotFound, Conflict):
            continue
    result.fixed_affinities = fix_affinities(store, node, deadline)
    if result.released_handles or result.fixed_affinities:
        log.info("GC released %d handles (%s), fixed affinities %s",
                 len(result.released_handles), result.released_ips, result.fixed_affinities)
    return result
