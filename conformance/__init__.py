"""CNI specification conformance suite (issue 6).

Runs named rules, each tied to a section of the CNI SPEC.md, against any plugin, for spec
versions 0.3.1, 0.4.0, 1.0.0 and 1.1.0, through two drivers: direct exec (CNI_* environment +
stdin, libcni-style chaining) and libcni via `cnitool`. See `python -m conformance --list-rules`.
"""
