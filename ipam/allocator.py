"""Address assignment (upstream ``AutoAssign`` / ``AssignIP``).

Auto-assign for one IP family:

1. the host's affine blocks in the usable pools, in address order (a pending
   affinity left by an interrupted claim is finished or undone first; an
   affinity whose block is missing gets its block re-created);
2. when they are full and ``autoAllocateBlocks`` is on and the host holds
   fewer than ``maxBlocksPerHost`` blocks: claim an unclaimed block (walking
   each pool's blocks from a per-host pseudo-random start), or, when every
   block of the pools exists, reclaim another host's block that has been
   empty for a minute;
3. still short and ``strictAffinity`` off: borrow a free address from any
   block of the usable pools, in random order.

Every block write is a compare-and-swap retried with bounded jittered
backoff; the handle is incremented before the block is written.
"""
from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice

from datastore.backend import Backend
from datastore.errors import AlreadyExists, Conflict, NotFound

from ipam import blocks as blk
from ipam import handles
from ipam.claim import CONFIRMED, PENDING, ClaimConflict, claim_block, reclaim_empty_block
from ipam.config import IPAMSettings, load_settings
from ipam.errors import AddressInUseError, NoAddressesError, RetriesExhausted
from ipam.pools import Pool, load_pools, pool_for_ip, usable_pools
from ipam.retry import Deadline, attempts
from ipam.store import Store, Versioned

log = logging.getLogger(__name__)

ASSIGN_TIMEOUT = 90.0  # upstream's CNI assign timeout
RECLAIM_AFTER = 60.0  # seconds an empty foreign block must have been claimed before we take it


@dataclass(frozen=True)
class Assignment:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    block_cidr: str

    @property
    def prefixlen(self) -> int:
        return int(self.block_cidr.rpartition("/")[2])

    @property
    def address(self) -> str:
        """The IP with the block's mask, as upstream calico-ipam returns it."""
        return f"{self.ip}/{self.prefixlen}"

    @property
    def version(self) -> int:
        return self.ip.version


class Allocator:
    def __init__(
        self,
        backend: Backend,
        node: str,
        *,
        deadline: Deadline | None = None,
        settings: IPAMSettings | None = None,
    ) -> None:
        self.store = Store(backend)
        self.backend = backend
        self.node = node
        self.deadline = deadline or Deadline(ASSIGN_TIMEOUT)
        self._settings = settings
        self._touched: set[str] = set()  # handles this allocator has written (not new any more)

    def preload(self) -> list[Pool]:
        """Read the IPAM settings and the IP pools (configuration, not
        allocation state) so that little is left to do under the host lock;
        returns the pools for :meth:`auto_assign`."""
        _ = self.settings
        return load_pools(self.backend)

    def restart_deadline(self) -> None:
        """Start the assignment timeout now (upstream starts it once the host
        lock is held)."""
        self.deadline = Deadline(self.deadline.seconds)

    @property
    def settings(self) -> IPAMSettings:
        if self._settings is None:
            self._settings = load_settings(self.backend)
        return self._settings

    # -- auto-assign ----------------------------------------------------------

    def auto_assign(
        self,
        version: int,
        handle_id: str,
        attrs: dict[str, str],
        *,
        num: int = 1,
        requested_pools: list[str] | None = None,
        namespace_labels: dict[str, str] | None = None,
        pools: list[Pool] | None = None,
    ) -> list[Assignment]:
        """Assign ``num`` IPv``version`` addresses to ``handle_id``.

        Raises :class:`NoAddressesError` (nothing assigned) when the usable
        pools cannot provide them; a partial assignment is released first.
        """
        choice = usable_pools(self.backend, self.node, version, requested_pools, namespace_labels, pools)
        settings = self.settings
        got: list[Assignment] = []
        try:
            affine = self._affine_blocks(version, choice.pools)
            for cidr, state in affine:
                if len(got) >= num:
                    break
                got += self._assign_from_block(
                    cidr, num - len(got), handle_id, attrs, owned=True, pending=(state == PENDING)
                )
            claimed = 0
            at_limit = False
            while len(got) < num and settings.auto_allocate_blocks:
                if len(affine) + claimed >= settings.block_limit:
                    log.info("host %s holds %d blocks (max %d): not claiming more",
                             self.node, len(affine) + claimed, settings.block_limit)
                    at_limit = True
                    break
                cidr = self._claim_free_block(choice.pools)
                if cidr is None:
                    break
                claimed += 1
                got += self._assign_from_block(cidr, num - len(got), handle_id, attrs, owned=True)
            if len(got) < num and not settings.strict_affinity:
                got += self._borrow(choice.pools, num - len(got), handle_id, attrs, {c for c, _ in affine})
        except BaseException:
            self._undo(got)
            raise
        if len(got) < num:
            self._undo(got)
            raise NoAddressesError(self._exhausted_message(version, choice.pools, settings, at_limit))
        return got

    def _undo(self, got: list[Assignment]) -> None:
        if not got:
            return
        from ipam.release import release_ips

        try:
            release_ips(self.store, [(str(a.ip), a.block_cidr) for a in got], self.deadline)
        except Exception as exc:  # noqa: BLE001 - already failing; DEL by handle cleans up
            log.error("could not undo partial assignment %s: %s", [a.address for a in got], exc)

    def _exhausted_message(self, version: int, pools: list[Pool], settings: IPAMSettings, at_limit: bool) -> str:
        names = ", ".join(p.describe() for p in pools)
        why = []
        if at_limit:
            why.append(f"the host holds maxBlocksPerHost={settings.block_limit} blocks")
        if settings.strict_affinity:
            why.append("strictAffinity is set, so blocks of other hosts cannot be borrowed")
        if not settings.auto_allocate_blocks:
            why.append("autoAllocateBlocks is off")
        return (
            f"no IPv{version} address available for host {self.node} in pools {names}: "
            f"the host's blocks are full and no block can be claimed"
            + (f" ({'; '.join(why)})" if why else " or borrowed (the pools are exhausted)")
        )

    def _affine_blocks(self, version: int, pools: list[Pool]) -> list[tuple[str, str]]:
        out = []
        for key, aff in self.store.list_affinities(self.node, version):
            if aff.value.deleted or aff.value.state not in (CONFIRMED, PENDING):
                continue
            if any(p.contains_block(key.cidr) for p in pools):
                out.append((key.cidr, aff.value.state))
        out.sort(key=lambda item: ipaddress.ip_network(item[0]).network_address)
        return out

    def _assign_from_block(
        self,
        cidr: str,
        num: int,
        handle_id: str,
        attrs: dict[str, str],
        *,
        owned: bool,
        pending: bool = False,
    ) -> list[Assignment]:
        """Allocate up to ``num`` addresses in ``cidr``. ``owned``: the block
        must be affine to this host (re-created if its affinity survived it)."""
        counted = 0  # addresses the handle currently counts for this attempt
        try:
            for _ in attempts(f"assign from block {cidr}", self.deadline):
                current = self._read_block(cidr, owned, pending)
                pending = False
                if current is None:
                    break
                block = current.value
                if owned and not blk.is_affine_to(block, self.node):
                    # Our affinity outlived our ownership: drop it.
                    log.warning("block %s is affine to %s, not %s: dropping stale affinity",
                                cidr, block.affinity, self.node)
                    self.store.delete_affinity(self.node, cidr)
                    break
                if not owned and self.settings.strict_affinity:
                    break
                ordinals = blk.pick_ordinals(block, num)
                if not ordinals:
                    break
                if counted == 0 and handle_id not in self._touched and self.store.can_write_both:
                    # A new handle: it and the block in one transaction (both or neither).
                    ips = blk.allocate(block, ordinals, handle_id, attrs)
                    try:
                        self.store.create_handle_and_update_block(handle_id, {cidr: len(ordinals)}, block,
                                                                  current.revision)
                    except AlreadyExists:
                        self._touched.add(handle_id)  # not new after all: count it the usual way
                        continue
                    except (Conflict, NotFound):
                        continue  # nothing was written
                    self._touched.add(handle_id)
                    log.debug("assigned %s from block %s to new handle %s", ips, cidr, handle_id)
                    return [Assignment(ip, cidr) for ip in ips]
                if counted < len(ordinals):
                    handles.increment(self.store, handle_id, cidr, len(ordinals) - counted, self.deadline,
                                      likely_new=handle_id not in self._touched)
                    self._touched.add(handle_id)
                elif counted > len(ordinals):
                    handles.decrement(self.store, handle_id, cidr, counted - len(ordinals), self.deadline)
                counted = len(ordinals)
                ips = blk.allocate(block, ordinals, handle_id, attrs)
                try:
                    self.store.update_block(block, current.revision)
                except (Conflict, NotFound):
                    continue
                log.debug("assigned %s from block %s to %s", ips, cidr, handle_id)
                return [Assignment(ip, cidr) for ip in ips]
        except RetriesExhausted:
            if counted:
                handles.decrement(self.store, handle_id, cidr, counted, None)
            raise
        if counted:
            handles.decrement(self.store, handle_id, cidr, counted, self.deadline)
        return []

    def _read_block(self, cidr: str, owned: bool, pending: bool) -> Versioned | None:
        if pending:
            # An interrupted claim: finish it (or drop it if another host won).
            try:
                return claim_block(self.store, self.node, cidr, self.deadline)
            except ClaimConflict:
                return None
        try:
            return self.store.get_block(cidr)
        except NotFound:
            if not owned:
                return None
        # Our affinity survived its block (crash between the two writes).
        try:
            return claim_block(self.store, self.node, cidr, self.deadline)
        except ClaimConflict:
            return None

    def _claim_free_block(self, pools: list[Pool]) -> str | None:
        if not pools:
            return None
        existing = {b.value.cidr: b for b in self.store.list_blocks(pools[0].version)}
        for pool in pools:
            in_pool = sum(1 for c in existing if pool.contains_block(c))
            budget = in_pool + 1
            for cidr in blk.candidate_blocks(pool.network, pool.block_size, self.node):
                if budget <= 0:
                    break
                if cidr in existing:
                    budget -= 1
                    continue
                try:
                    claim_block(self.store, self.node, cidr, self.deadline)
                    return cidr
                except ClaimConflict:
                    existing[cidr] = None  # type: ignore[assignment]
                    continue
        # Every block of the pools exists: take one that another host has
        # left empty for a while.
        for pool in pools:
            empties = [
                b for c, b in existing.items()
                if b is not None and pool.contains_block(c) and self._reclaimable(b.value)
            ]
            random.shuffle(empties)
            for b in empties:
                if reclaim_empty_block(self.store, b.value.host, b, self.deadline):
                    try:
                        claim_block(self.store, self.node, b.value.cidr, self.deadline)
                        return b.value.cidr
                    except ClaimConflict:
                        continue
        return None

    def _reclaimable(self, block) -> bool:  # type: ignore[no-untyped-def]
        if block.affinity is None or blk.is_affine_to(block, self.node):
            return False
        if not block.affinity.startswith(blk.HOST_AFFINITY_PREFIX) or not blk.is_empty(block):
            return False
        if not block.affinity_claim_time:
            return True
        try:
            claimed = datetime.fromisoformat(block.affinity_claim_time.replace("Z", "+00:00"))
        except ValueError:
            return True
        return (datetime.now(timezone.utc) - claimed).total_seconds() >= RECLAIM_AFTER

    def _borrow(
        self, pools: list[Pool], num: int, handle_id: str, attrs: dict[str, str], tried: set[str]
    ) -> list[Assignment]:
        if not pools:
            return []
        candidates = [
            b.value.cidr
            for b in self.store.list_blocks(pools[0].version)
            if b.value.cidr not in tried
            and blk.free_count(b.value) > 0
            and any(p.contains_block(b.value.cidr) for p in pools)
        ]
        random.shuffle(candidates)
        got: list[Assignment] = []
        for cidr in candidates:
            if len(got) >= num:
                break
            got += self._assign_from_block(cidr, num - len(got), handle_id, attrs, owned=False)
        if got:
            log.info("borrowed %s from blocks of other hosts", [a.address for a in got])
        return got

    # -- STATUS -------------------------------------------------------------------

    def available(self, version: int, requested_pools: list[str] | None = None) -> bool:
        """Whether an auto-assign of one IPv``version`` address could succeed
        now (read-only). Raises :class:`PoolError` when no pool is usable."""
        choice = usable_pools(self.backend, self.node, version, requested_pools)
        settings = self.settings
        affine = {c for c, _ in self._affine_blocks(version, choice.pools)}
        existing = {b.value.cidr: b.value for b in self.store.list_blocks(version)}
        for cidr in affine:
            if cidr not in existing or blk.free_count(existing[cidr]) > 0:
                return True
        if settings.auto_allocate_blocks and len(affine) < settings.block_limit:
            for pool in choice.pools:
                in_pool = [c for c in existing if pool.contains_block(c)]
                if len(in_pool) < blk.block_count(pool.network, pool.block_size):
                    return True
                if any(self._reclaimable(existing[c]) for c in in_pool):
                    return True
        if not settings.strict_affinity:
            return any(
                blk.free_count(b) > 0 and any(p.contains_block(c) for p in choice.pools)
                for c, b in existing.items()
            )
        return False

    # -- a specific address -----------------------------------------------------

    def assign_ip(self, ip: str, handle_id: str, attrs: dict[str, str]) -> Assignment:
        """Assign exactly ``ip`` (``IP=`` in CNI_ARGS)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise NoAddressesError(f"requested IP {ip!r} is not a valid IP address") from None
        all_pools = load_pools(self.backend)
        enabled = [p for p in all_pools if not p.disabled]
        pool = pool_for_ip(enabled, str(address))
        if pool is None:
            known = ", ".join(p.describe() for p in enabled if p.version == address.version) or "none"
            raise NoAddressesError(
                f"requested IP {address} is not in any enabled IP pool (IPv{address.version} pools: {known})"
            )
        cidr = blk.block_cidr_for_ip(address, pool.block_size)
        counted = False
        try:
            for _ in attempts(f"assign {address}", self.deadline):
                try:
                    current = self.store.get_block(cidr)
                except NotFound:
                    try:
                        claim_block(self.store, self.node, cidr, self.deadline)
                    except ClaimConflict:
                        pass
                    continue
                block = current.value
                if self.settings.strict_affinity and not blk.is_affine_to(block, self.node):
                    raise NoAddressesError(
                        f"requested IP {address} is in block {cidr} affine to "
                        f"{block.affinity or 'no host'}; strictAffinity forbids using it on {self.node}"
                    )
                ordinal = blk.ordinal_of(block, address)
                if block.allocations[ordinal] is not None:
                    owner = blk.handle_of(block, ordinal)
                    raise AddressInUseError(f"requested IP {address} is already in use (handle {owner})")
                if not counted:
                    handles.increment(self.store, handle_id, cidr, 1, self.deadline,
                                      likely_new=handle_id not in self._touched)
                    self._touched.add(handle_id)
                    counted = True
                blk.allocate(block, [ordinal], handle_id, attrs)
                try:
                    self.store.update_block(block, current.revision)
                except (Conflict, NotFound):
                    continue
                return Assignment(address, cidr)
        except BaseException:
            if counted:
                try:
                    handles.decrement(self.store, handle_id, cidr, 1, None)
                except Exception as exc:  # noqa: BLE001
                    log.error("could not undo handle %s count: %s", handle_id, exc)
            raise
        raise AssertionError("unreachable")  # attempts() raises when exhausted
