"""Releasing addresses (upstream ``ReleaseByHandle`` / ``ReleaseIPs``).

Each block is updated with a compare-and-swap; a block left empty and
without affinity (borrowed addresses only) is deleted; the handle is
decremented after the block write and deleted when it counts nothing. A
crash between the two leaves a handle that over-counts, which the next
release of that handle (DEL is retried) or GC cleans up.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from datastore.errors import Conflict, NotFound

from ipam import blocks as blk
from ipam import handles
from ipam.retry import Deadline, attempts
from ipam.store import Store, Versioned

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ipam.values import IPAMHandle

log = logging.getLogger(__name__)


@dataclass
class ReleaseResult:
    found: bool  # the handle existed
    released: list[str] = field(default_factory=list)  # addresses freed


def _release_in_block(
    store: Store,
    cidr: str,
    select,  # type: ignore[no-untyped-def]  # (block) -> list of ordinals
    deadline: Deadline | None,
    release_empty_for: str | None,
    handle: "Versioned[IPAMHandle] | None" = None,
) -> tuple[list[str], dict[str | None, int], bool]:
    """Free the ordinals ``select`` picks. ``handle``: the handle being
    released, counting nothing but this block: deleted in the same transaction
    as the block write where the datastore allows (third value: it was)."""
    for _ in attempts(f"release in block {cidr}", deadline):
        try:
            current = store.get_block(cidr)
        except NotFound:
            return [], {}, False
        block = current.value
        ordinals = select(block)
        if not ordinals:
            return [], {}, False
        ips = [str(blk.ip_of(block, o)) for o in ordinals]
        counts = blk.release_ordinals(block, ordinals)
        handle_deleted = False
        try:
            if blk.is_empty(block) and block.affinity is None:
                store.delete_block(cidr, current.revision)
            elif handle is not None and handle.value.handle_id and set(counts) == {handle.value.handle_id}:
                try:
                    store.update_block_and_delete_handle(block, current.revision, handle.value.handle_id,
                                                         handle.revision)
                    handle_deleted = True
                except (Conflict, NotFound):
                    handle = None  # nothing was written: retry the usual way (block, then handle)
                    continue
            else:
                store.update_block(block, current.revision)
        except (Conflict, NotFound):
            continue
        if release_empty_for and blk.is_empty(block) and blk.is_affine_to(block, release_empty_for):
            from ipam.claim import release_affinity

            try:
                release_affinity(store, release_empty_for, cidr, require_empty=True, deadline=deadline)
            except Exception as exc:  # noqa: BLE001 - the release itself succeeded
                log.warning("could not release the affinity of empty block %s: %s", cidr, exc)
        return ips, counts, handle_deleted
    raise AssertionError("unreachable")


_UNREAD = object()


def release_by_handle(
    store: Store,
    handle_id: str,
    deadline: Deadline | None = None,
    *,
    release_empty_for: str | None = None,
    current: "Versioned[IPAMHandle] | None | object" = _UNREAD,
) -> ReleaseResult:
    """Free every address of ``handle_id`` and delete the handle. Releasing
    a handle that does not exist is not an error (``found`` is False).
    ``current``: the handle as just read (None: it does not exist), to save
    reading it again."""
    if current is _UNREAD:
        try:
            current = store.get_handle(handle_id)
        except NotFound:
            return ReleaseResult(False)
    if current is None:
        return ReleaseResult(False)
    assert isinstance(current, Versioned)
    result = ReleaseResult(True)
    known: Versioned[IPAMHandle] | None = current
    together = store.can_write_both and len(current.value.block) == 1
    for cidr in sorted(current.value.block):
        ips, _, deleted = _release_in_block(
            store, cidr, lambda b: blk.ordinals_for_handle(b, handle_id), deadline, release_empty_for,
            handle=known if together else None,
        )
        result.released += ips
        if deleted:
            continue
        # Whatever the block held for this handle is gone now (an over-count
        # left by a crash included): drop the block from the handle.
        known = handles.decrement(store, handle_id, cidr, None, deadline, known=known)
    log.info("released handle %s: %s", handle_id, result.released or "no addresses")
    return result


def find_block_cidr(store: Store, ip: str) -> str | None:
    address = ipaddress.ip_address(ip)
    for cidr, _, _ in store.list_block_dicts(address.version):
        if address in ipaddress.ip_network(cidr):
            return cidr
    return None


def release_ips(
    store: Store,
    ips: list[tuple[str, str | None]],
    deadline: Deadline | None = None,
    *,
    sequence_numbers: dict[str, int] | None = None,
    release_empty_for: str | None = None,
) -> list[str]:
    """Free specific addresses, given as ``(ip, block cidr or None)``;
    returns the addresses that were allocated and are now free."""
    released: list[str] = []
    by_block: dict[str, list[str]] = {}
    for ip, cidr in ips:
        cidr = cidr or find_block_cidr(store, ip)
        if cidr is None:
            log.info("release of %s: no block holds it", ip)
            continue
        by_block.setdefault(cidr, []).append(ip)
    for cidr, addresses in by_block.items():

        def select(block, addresses=addresses):  # type: ignore[no-untyped-def]
            out = []
            for ip in addresses:
                ordinal = blk.ordinal_of(block, ip)
                if block.allocations[ordinal] is None:
                    continue
                expected = (sequence_numbers or {}).get(ip)
                actual = block.sequence_number_for_allocation.get(str(ordinal))
                if expected is not None and actual is not None and expected != actual:
                    log.info("not releasing %s: it was re-allocated since (sequence %s != %s)", ip, actual, expected)
                    continue
                out.append(ordinal)
            return out

        freed, counts, _ = _release_in_block(store, cidr, select, deadline, release_empty_for)
        released += freed
        for handle_id, count in counts.items():
            if handle_id:
                handles.decrement(store, handle_id, cidr, count, deadline)
    return released
