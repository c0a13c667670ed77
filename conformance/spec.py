"""Facts from the CNI specification the suite checks against (SPEC.md, spec 1.1.0)."""
from __future__ import annotations

SPEC_URL = "https://github.com/containernetworking/cni/blob/main/SPEC.md"

# Versions the suite knows how to test (result schemas differ between them).
TESTABLE_VERSIONS: tuple[str, ...] = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")

# Well-known error codes (SPEC.md section 5, "Error").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_STATUS_UNAVAILABLE = 50
ERR_STATUS_LIMITED = 51

# Required environment per command (SPEC.md section 2, "CNI operations").
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "STATUS": ("CNI_COMMAND",),
    "GC": ("CNI_COMMAND", "CNI_PATH"),
    "VERSION": ("CNI_COMMAND",),
}

GC_VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"

# A version no plugin supports, for the "incompatible version" rule.
UNSUPPORTED_VERSION = "99.99.99"


def vtuple(version: str) -> tuple[int, ...]:
    """'1.0.0' -> (1, 0, 0). Raises ValueError on anything that is not dotted numbers."""
    return tuple(int(part) for part in version.split("."))


def at_least(version: str, minimum: str) -> bool:
    return vtuple(version) >= vtuple(minimum)


def supports_check(version: str) -> bool:
    """CHECK and prevResult on DEL arrived in 0.4.0."""
    return at_least(version, "0.4.0")


def supports_gc_status(version: str) -> bool:
    """GC and STATUS arrived in 1.1.0."""
    return at_least(version, "1.1.0")
