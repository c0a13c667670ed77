"""The conformance rules, in report order. Each carries the SPEC.md section it comes from."""
from __future__ import annotations

from conformance.rules.base import Rule, registered_rules

# Importing the modules registers their rules (order = report order).
from conformance.rules import version_rule, add, delete, check, chain, lifecycle11, errors, output  # noqa: E402,F401


def all_rules() -> list[Rule]:
    return registered_rules()


__all__ = ["Rule", "all_rules"]
