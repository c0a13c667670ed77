"""Typed reads and writes of the IPAM objects over a :class:`Backend`.

Values in the backend are plain dicts; here they become the light values of
:mod:`ipam.values` (validated on read as the pydantic models of
:mod:`datastore.models.ipam` would, without importing pydantic for plain
documents) and go back as upstream's JSON. Every write that replaces an object is a compare-and-swap on the
revision it was read at; block writes bump the block's sequence number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from datastore.backend import Backend
from datastore.errors import NotFound
from datastore.keys import BlockAffinityKey, BlockKey, HandleKey, ListOptions
from ipam.values import AllocationBlock, BlockAffinity, IPAMHandle

from ipam import blocks as blk

T = TypeVar("T")


@dataclass
class Versioned(Generic[T]):
    value: T
    revision: str


class Store:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- blocks -------------------------------------------------------------

    def get_block(self, cidr: str) -> Versioned[AllocationBlock]:
        kv = self.backend.get(BlockKey(cidr))
        return Versioned(AllocationBlock.from_dict(kv.value), kv.revision)

    def list_blocks(self, ip_version: int | None = None) -> list[Versioned[AllocationBlock]]:
        result = self.backend.list(ListOptions(kind="Block", ip_version=ip_version))
        return [Versioned(AllocationBlock.from_dict(kv.value), kv.revision) for kv in result.items]

    def list_block_dicts(self, ip_version: int | None = None) -> list[tuple[str, dict, str]]:
        """(cidr, raw value, revision) without validation (the checker validates itself)."""
        result = self.backend.list(ListOptions(kind="Block", ip_version=ip_version))
        return [(kv.key.cidr, kv.value, kv.revision) for kv in result.items]  # type: ignore[union-attr]

    def create_block(self, block: AllocationBlock) -> Versioned[AllocationBlock]:
        kv = self.backend.create(BlockKey(block.cidr), block.to_dict())
        return Versioned(block, kv.revision)

    def update_block(self, block: AllocationBlock, revision: str) -> Versioned[AllocationBlock]:
        blk.bump_sequence(block)
        kv = self.backend.update(BlockKey(block.cidr), block.to_dict(), revision)
        return Versioned(block, kv.revision)

    @property
    def can_write_both(self) -> bool:
        """Whether the backend writes a new handle and a block in one transaction (etcd)."""
        return hasattr(self.backend, "create_and_update") and hasattr(self.backend, "update_and_delete")

    def create_handle_and_update_block(self, handle_id: str, counts: dict[str, int], block: AllocationBlock,
                                       revision: str) -> Versioned[AllocationBlock]:
        """A new handle and the block allocating to it, in one transaction
        (needs :attr:`can_write_both`): both or neither. Raises AlreadyExists
        (the handle) or Conflict/NotFound (the block)."""
        handle = IPAMHandle(handle_id=handle_id, block=dict(counts))
        blk.bump_sequence(block)
        rev = self.backend.create_and_update(  # type: ignore[attr-defined]
            HandleKey(handle_id), handle.to_dict(), BlockKey(block.cidr), block.to_dict(), revision)
        return Versioned(block, rev)

    def update_block_and_delete_handle(self, block: AllocationBlock, revision: str, handle_id: str,
                                       handle_revision: str) -> Versioned[AllocationBlock]:
        """The block releasing a handle's last addresses and the handle's
        deletion, in one transaction (needs :attr:`can_write_both`)."""
        blk.bump_sequence(block)
        rev = self.backend.update_and_delete(  # type: ignore[attr-defined]
            BlockKey(block.cidr), block.to_dict(), revision, HandleKey(handle_id), handle_revision)
        return Versioned(block, rev)

    def delete_block(self, cidr: str, revision: str) -> None:
        self.backend.delete(BlockKey(cidr), revision)

    # -- affinities ---------------------------------------------------------

    def get_affinity(self, node: str, cidr: str) -> Versioned[BlockAffinity]:
        kv = self.backend.get(BlockAffinityKey(node, cidr))
        return Versioned(BlockAffinity.from_dict(kv.value or {}), kv.revision)

    def list_affinities(
        self, node: str | None = None, ip_version: int | None = None
    ) -> list[tuple[BlockAffinityKey, Versioned[BlockAffinity]]]:
        result = self.backend.list(ListOptions(kind="BlockAffinity", host=node, ip_version=ip_version))
        out = []
        for kv in result.items:
            key = kv.key
            assert isinstance(key, BlockAffinityKey)
            if ip_version is not None and blk.ip_version(key.cidr) != ip_version:
                continue
            out.append((key, Versioned(BlockAffinity.from_dict(kv.value or {}), kv.revision)))
        return out

    def create_affinity(self, node: str, cidr: str, state: str) -> Versioned[BlockAffinity]:
        value = BlockAffinity(state=state)  # type: ignore[arg-type]
        kv = self.backend.create(BlockAffinityKey(node, cidr), value.to_dict())
        return Versioned(value, kv.revision)

    def update_affinity(self, node: str, cidr: str, value: BlockAffinity, revision: str) -> Versioned[BlockAffinity]:
        kv = self.backend.update(BlockAffinityKey(node, cidr), value.to_dict(), revision)
        return Versioned(value, kv.revision)

    def delete_affinity(self, node: str, cidr: str, revision: str | None = None) -> None:
        try:
            self.backend.delete(BlockAffinityKey(node, cidr), revision)
        except NotFound:
            pass

    # -- handles ------------------------------------------------------------

    def get_handle(self, handle_id: str) -> Versioned[IPAMHandle]:
        kv = self.backend.get(HandleKey(handle_id))
        handle = IPAMHandle.from_dict(kv.value)
        handle.handle_id = handle_id
        return Versioned(handle, kv.revision)

    def get_handles(self, handle_ids: list[str]) -> dict[str, Versioned[IPAMHandle] | None]:
        """Several handles (None: absent), in one round trip when the backend
        can batch reads (etcd: one transaction)."""
        keys = [HandleKey(h) for h in handle_ids]
        read_many = getattr(self.backend, "read_many", None)
        if read_many is not None:
            kvs = read_many(keys)
        else:
            kvs = []
            for key in keys:
                try:
                    kvs.append(self.backend.get(key))
                except NotFound:
                    kvs.append(None)
        out: dict[str, Versioned[IPAMHandle] | None] = {}
        for handle_id, kv in zip(handle_ids, kvs):
            if kv is None:
                out[handle_id] = None
                continue
            handle = IPAMHandle.from_dict(kv.value)  # type: ignore[union-attr]
            handle.handle_id = handle_id
            out[handle_id] = Versioned(handle, kv.revision)  # type: ignore[union-attr]
        return out

    def list_handles(self) -> list[Versioned[IPAMHandle]]:
        result = self.backend.list(ListOptions(kind="IPAMHandle"))
        out = []
        for kv in result.items:
            assert isinstance(kv.key, HandleKey)
            handle = IPAMHandle.from_dict(kv.value)
            handle.handle_id = kv.key.handle_id
            out.append(Versioned(handle, kv.revision))
        return out

    def create_handle(self, handle_id: str, counts: dict[str, int]) -> Versioned[IPAMHandle]:
        handle = IPAMHandle(handle_id=handle_id, block=dict(counts))
        kv = self.backend.create(HandleKey(handle_id), handle.to_dict())
        return Versioned(handle, kv.revision)

    def update_handle(self, handle: IPAMHandle, revision: str) -> Versioned[IPAMHandle]:
        assert handle.handle_id
        kv = self.backend.update(HandleKey(handle.handle_id), handle.to_dict(), revision)
        return Versioned(handle, kv.revision)

    def delete_handle(self, handle_id: str, revision: str | None = None) -> None:
        self.backend.delete(HandleKey(handle_id), revision)
