"""The IPAM configuration (strictAffinity, autoAllocateBlocks, maxBlocksPerHost).

Read from upstream's etcd key ``/calico/ipam/v2/config``; when that is
absent, from the ``IPAMConfiguration`` resource ``default``; else upstream's
defaults (strictAffinity false, autoAllocateBlocks true, maxBlocksPerHost
0 meaning 20).
"""
from __future__ import annotations

from dataclasses import dataclass

from datastore.backend import Backend
from datastore.errors import NotFound
from datastore.keys import IPAMConfigKey, ResourceKey
from ipam.values import DEFAULT_MAX_BLOCKS_PER_HOST, IPAMConfigValue


@dataclass(frozen=True)
class IPAMSettings:
    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0

    @property
    def block_limit(self) -> int:
        return self.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST


def load_settings(backend: Backend) -> IPAMSettings:
    try:
        value = IPAMConfigValue.from_dict(backend.get(IPAMConfigKey()).value)
        return IPAMSettings(value.strict_affinity, value.auto_allocate_blocks, value.max_blocks_per_host)
    except NotFound:
        if getattr(backend, "ipam_config_is_resource", False):
            return IPAMSettings()  # kubernetes: both keys are the ipamconfigs CR "default"
    try:
        spec = backend.get(ResourceKey("IPAMConfiguration", "default")).value.get("spec") or {}
    except NotFound:
        return IPAMSettings()
    return IPAMSettings(
        bool(spec.get("strictAffinity", False)),
        bool(spec.get("autoAllocateBlocks", True)),
        int(spec.get("maxBlocksPerHost") or 0),
    )


def save_settings(backend: Backend, settings: IPAMSettings) -> None:
    """Write the etcd IPAM config key (tests; ``calicoctl ipam configure`` later)."""
    value = IPAMConfigValue(
        strict_affinity=settings.strict_affinity,
        auto_allocate_blocks=settings.auto_allocate_blocks,
        max_blocks_per_host=settings.max_blocks_per_host,
    )
    backend.apply(IPAMConfigKey(), value.to_dict())
