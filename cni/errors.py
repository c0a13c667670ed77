"""CNI error codes (spec 1.1 §"Error") and pycalico's own codes (>= 100)."""
from __future__ import annotations

from typing import Any

# Spec-defined codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50  # STATUS: the plugin cannot service ADDs
PLUGIN_NOT_AVAILABLE_LIMITED = 51  # STATUS: limited connectivity

# pycalico's own codes (listed in the README).
DATASTORE_ERROR = 100  # the datastore rejected or failed an operation
IPAM_ERROR = 101  # the IPAM plugin failed (its message is passed through)
NO_ADDRESSES = 102  # no usable pool / pool exhausted
ADDRESS_IN_USE = 103  # a requested address is already allocated
DATAPLANE_ERROR = 104  # netlink / sysctl failure setting up the pod
CHECK_FAILED = 105  # CHECK found the pod's network differing from prevResult
INTERNAL_ERROR = 199  # a bug: an exception we did not expect


class CNIError(Exception):
    """An error the plugin reports as the spec's error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg
