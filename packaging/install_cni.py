#!/usr/bin/env python3
"""Run the installer from a checkout: ``python packaging/install_cni.py --help``.

On a node, use the frozen bundle's ``install`` link instead (no Python needed).
The code is the ``calico_install`` package next to this file; this script only
puts this directory on ``sys.path`` (``packaging`` itself is never imported:
that name belongs to the PyPI distribution pip and setuptools use).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from calico_install.main import main  # noqa: E402

if __name__ == "__main__":
    main()
