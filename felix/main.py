"""calico-felix entry point: not implemented yet (its issue is still open)."""
from __future__ import annotations

import sys


def main() -> None:
    sys.stderr.write("calico-felix: not implemented yet\n")
    sys.exit(1)
