"""Block affinity: claiming a block for a host, and giving it up.

Claim protocol (upstream ``claimAffineBlock``): create the host's affinity in
state ``pending`` (or set an existing one back to pending), create the block
with ``affinity: host:<node>``, then mark the affinity ``confirmed``. If the
block already exists and is ours, confirm; if it belongs to someone else,
delete our pending affinity and report a conflict. A crash at any point
leaves a pending affinity that the next claim (or GC) resolves; a pending
affinity never counts as ownership.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from datastore.errors import AlreadyExists, Conflict, NotFound
from ipam.values import BlockAffinity

from ipam import blocks as blk
from ipam.retry import Deadline, attempts
from ipam.store import Store, Versioned

log = logging.getLogger(__name__)

PENDING = "pending"
CONFIRMED = "confirmed"
PENDING_DELETION = "pendingDeletion"


class ClaimConflict(Exception):
    """Another host owns the block."""


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def set_state(store: Store, node: str, cidr: str, state: str, deadline: Deadline | None) -> None:
    for _ in attempts(f"set affinity {node}/{cidr} {state}", deadline):
        try:
            current = store.get_affinity(node, cidr)
        except NotFound:
            if state == PENDING_DELETION:
                return
            try:
                store.create_affinity(node, cidr, state)
                return
            except AlreadyExists:
                continue
        if current.value.state == state and not current.value.deleted:
            return
        value = BlockAffinity(state=state)  # type: ignore[arg-type]
        try:
            store.update_affinity(node, cidr, value, current.revision)
            return
        except Conflict:
            continue


def claim_block(store: Store, node: str, cidr: str, deadline: Deadline | None = None) -> Versioned:
    """Claim ``cidr`` for ``node``; returns the block. Raises
    :class:`ClaimConflict` when another host owns it."""
    try:
        store.create_affinity(node, cidr, PENDING)
    except AlreadyExists:
        set_state(store, node, cidr, PENDING, deadline)
    try:
        created = store.create_block(blk.new_block(cidr, node, claim_time=now_rfc3339()))
        set_state(store, node, cidr, CONFIRMED, deadline)
        log.info("claimed block %s for host %s", cidr, node)
        return created
    except AlreadyExists:
        pass
    existing = store.get_block(cidr)
    if blk.is_affine_to(existing.value, node):
        set_state(store, node, cidr, CONFIRMED, deadline)
        return existing
    store.delete_affinity(node, cidr)
    raise ClaimConflict(f"block {cidr} is already claimed by {existing.value.affinity or 'nobody (borrowed)'}")


def resolve_pending(store: Store, node: str, cidr: str, deadline: Deadline | None = None) -> Versioned | None:
    """Finish or undo a pending affinity left by an interrupted claim.
    Returns the block when it is (now) ours."""
    try:
        return claim_block(store, node, cidr, deadline)
    except ClaimConflict:
        return None


def release_affinity(
    store: Store,
    node: str,
    cidr: str,
    *,
    require_empty: bool = True,
    deadline: Deadline | None = None,
) -> bool:
    """Give up ``node``'s affinity for ``cidr`` (upstream
    ``releaseBlockAffinity``): affinity -> pendingDeletion; delete the block
    if empty (else, unless ``require_empty``, clear its affinity); delete the
    affinity. Returns False (and restores the affinity) when the block is in
    use and ``require_empty`` is set."""
    set_state(store, node, cidr, PENDING_DELETION, deadline)
    for _ in attempts(f"release affinity {node}/{cidr}", deadline):
        try:
            current = store.get_block(cidr)
        except NotFound:
            break
        block = current.value
        if block.affinity is not None and not blk.is_affine_to(block, node):
            break  # someone else's block now: just drop our affinity
        try:
            if blk.is_empty(block):
                store.delete_block(cidr, current.revision)
            elif require_empty:
                set_state(store, node, cidr, CONFIRMED, deadline)
                return False
            else:
                block.affinity = None
                block.affinity_claim_time = None
                store.update_block(block, current.revision)
            break
        except (Conflict, NotFound):
            continue
    store.delete_affinity(node, cidr)
    log.info("released affinity of host %s for block %s", node, cidr)
    return True


def reclaim_empty_block(
    store: Store, other_node: str, block: Versioned, deadline: Deadline | None = None
) -> bool:
    """Take an empty block away from ``other_node`` (upstream's fallback when
    a pool has no unclaimed block left). The block is deleted guarded by the
    revision it was seen empty at, so a concurrent allocation by its owner
    wins."""
    cidr = block.value.cidr
    try:
        aff = store.get_affinity(other_node, cidr)
    except NotFound:
        aff = None
    if aff is not None:
        try:
            store.update_affinity(other_node, cidr, BlockAffinity(state=PENDING_DELETION), aff.revision)  # type: ignore[arg-type]
        except (Conflict, NotFound):
            return False
    try:
        store.delete_block(cidr, block.revision)
    except (Conflict, NotFound):
        if aff is not None:
            try:
                current = store.get_affinity(other_node, cidr)
                store.update_affinity(other_node, cidr, BlockAffinity(state=CONFIRMED), current.revision)  # type: ignore[arg-type]
            except (Conflict, NotFound):
                pass
        return False
    store.delete_affinity(other_node, cidr)
    log.info("reclaimed empty block %s from host %s", cidr, other_node)
    return True
