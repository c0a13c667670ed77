"""Entry point: python -m conformance --cni-path DIR --conf FILE [...]."""
from conformance.cli import main

raise SystemExit(main())
