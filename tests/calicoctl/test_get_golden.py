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
    # go-template: JSON field names, upstream's Go field names, promoted metadata.
    ("ippools_go_template.txt", ["get", "ippools", "-o",
                                 'go-template={{range .}}{{range .Items}}{{.metadata.name}}: {{.spec.cidr}}'
                                 '{{"\\n"}}{{end}}{{end}}']),
    ("nodes_go_template.txt", ["get", "nodes", "-o",
                               "go-template={{range .}}{{.Kind}} rv-set={{if .ResourceVersion}}yes{{end}}\n"
                               "{{range .Items}}{{.Name}} asn={{.Spec.BGP.ASNumber}} v4={{.Spec.BGP.IPv4Address}} "
                               "labels={{.ObjectMeta.Labels}}\n{{end}}{{end}}"]),
    ("weps_go_template.txt", ["get", "weps", "-A", "-o",
                              'go-template={{range .}}{{range .Items}}{{.Namespace}}/{{.Spec.Pod}} '
                              '{{join .Spec.IPNetworks ","}} {{index .Spec.Profiles 0}}{{"\\n"}}{{end}}{{end}}']),
    ("policies_go_template_file.txt", ["get", "gnp", "deny-smtp", "-o",
                                       f"go-template-file={os.path.join(DATA, 'policies.tmpl')}"]),
    ("policies_go_template_file_two.txt", ["get", "-n", "shop", "policy", "allow-web", "-o",
                                           f"go-template-file={os.path.join(DATA, 'policies.tmpl')}"]),
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


# (case, -o value, error text): refused before the datastore is touched, or
# failing while executing; either way exit 1 and nothing on stdout.
TEMPLATE_ERRORS = [
    ("unclosed action", "go-template={{range .}", "template: get:1: unclosed action"),
    ("missing end", "go-template={{range .}}x", "template: get:1: unexpected EOF"),
    ("stray end", "go-template=x{{end}}", "template: get:1: unexpected {{end}}"),
    ("unknown function", "go-template={{frob .}}", 'template: get:1: function "frob" not defined'),
    ("define", 'go-template={{define "x"}}{{end}}',
     "template: get:1: {{define}} is not supported by calicoctl's go-template subset"),
    ("template", 'go-template={{template "x"}}',
     "template: get:1: {{template}} is not supported by calicoctl's go-template subset"),
    ("html", "go-template={{html .}}",
     "template: get:1: function \"html\" is not supported by calicoctl's go-template subset"),
    ("index out of range", "go-template={{index . 7}}",
     'template: get:1: executing "get" at <index>: error calling index: index out of range: 7'),
    ("missing file", "go-template-file=/nonexistent/t.tmpl", "open /nonexistent/t.tmpl: no such file or directory"),
]


def test_go_template_errors(calicoctl_etcd: Calicoctl) -> None:
    calicoctl_etcd.ok("apply", "-f", EVERY_KIND)
    failures = []
    for case, output, message in TEMPLATE_ERRORS:
        result = calicoctl_etcd("get", "ippools", "-o", output)
        if result.returncode != 1 or result.stdout or result.stderr != message + "\n":
            failures.append(f"{case}: {result}")
    assert not failures, "\n".join(failures)


def test_golden_files_are_all_used() -> None:
    assert sorted(os.listdir(GOLDEN)) == sorted(name for name, _ in CASES)
