"""calicoctl: the operator's CLI (resources, IPAM, node status)."""

__version__ = "0.1.0"
