"""IPAM errors. The CNI layer (:mod:`ipam.plugin`) maps them to CNI codes."""
from __future__ import annotations


class IPAMError(Exception):
    """Base of every IPAM failure."""


class NoAddressesError(IPAMError):
    """No usable pool, or every usable pool is exhausted (CNI code 102)."""


class AddressInUseError(IPAMError):
    """A specifically requested address is already allocated (CNI code 103)."""


class PoolError(NoAddressesError):
    """A requested pool does not exist, is disabled, or is of the wrong family."""


class RetriesExhausted(IPAMError):
    """Compare-and-swap retries or the operation deadline ran out (try again later)."""
