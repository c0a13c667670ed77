"""Golden output of ``calicoctl get`` in every format, from the real executable.

Per-run values (uid, creationTimestamp, resourceVersion, clusterGUID) are
masked.  Regenerate with ``CALICOCTL_UPDATE_GOLDEN=1`` after an intended
change, and review the diff.
"""
from __future__ import annotations

import os

import pytest

from tests.calicoctl.conftest import DATA, Calicoctl, normalise

pytestmark = pytest.mark.etcd

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
EVERY_KIND = os.path.join(DATA, "every_kind.yaml")

CASES = [
    # (golden file, arguments)
    ("every_kind_ps.txt", ["get", "-f", EVERY_KIND]),
    ("every_kind_wide.txt", ["get", "-f", EVERY_KIND, "-o", "wide"]),
    ("every_kind_name.txt", ["get", "-f", EVERY_KIND, "-o", "name"]),
    ("ippools_ps.txt", ["get", "ippools"]),
    ("ippools_wide.txt", ["get", "ippool", "-o", "wide"]),
    ("ippools_custom.txt", ["get", "pools", "-o", "custom-columns=NAME,CIDR,NAT,IPIPMODE"]),
    ("ippool_yaml.txt", ["get", "ippool", "pool-v4", "-o", "yaml"]),
    ("ippools_json.txt", ["get", "ippools", "-o", "json"]),
    ("tiers_list_yaml.txt", ["get", "tiers", "-o", "yaml"]),
    ("weps_all_namespaces_wide.txt", ["get", "weps", "-A", "-o", "wide"]),
    ("policy_two_names_yaml.txt", ["get", "gnp", "deny-smtp", "deny-smtp", "-o", "yaml"]),
]


def test_get_golden(calicoctl_etcd: Calicoctl) -> None:
    calicoctl = calicoctl_etcd
    calicoctl.ok("apply", "-f", EVERY_KIND)
    update = os.environ.get("CALICOCTL_UPDATE_GOLDEN") == "1"
    mismatches = []
    for name, args in CASES:
        result = calicoctl.ok(*args)
        got = normalise(result.stdout.replace(DATA, "<DATA>"))
        path = os.path.join(GOLDEN, name)
        if update:
            with open(path, "w", encoding="utf-8") as f:
                f.write(got)
            continue
        with open(path, encoding="utf-8") as f:
            want = f.read()
        if got != want:
            mismatches.append(f"{name} ({' '.join(args)}):\n--- want\n{want}--- got\n{got}")
    assert not mismatches, "\n".join(mismatches)


def test_golden_files_are_all_used() -> None:
    assert sorted(os.listdir(GOLDEN)) == sorted(name for name, _ in CASES)
