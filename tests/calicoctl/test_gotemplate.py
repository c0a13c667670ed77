"""The go-template subset (pure logic): each construct it supports, and the
constructs it refuses.  The executable's golden tests are in test_get_golden."""
from __future__ import annotations

import pytest

from calicoctl.gotemplate import TemplateError, execute

POOL = {"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "p1", "labels": {"b": "2", "a": "1"}, "resourceVersion": "7"},
        "spec": {"cidr": "10.0.0.0/24", "blockSize": 26, "natOutgoing": True, "order": 2.5,
                 "allowedUses": ["Workload", "Tunnel"]}}
DATA = [{"kind": "IPPoolList", "apiVersion": "projectcalico.org/v3", "metadata": {"resourceVersion": "9"},
         "items": [POOL, {"kind": "IPPool", "metadata": {"name": "p2"}, "spec": {"cidr": "10.1.0.0/24"}}]}]

CASES = [
    ("plain text", "hello", "hello"),
    ("json names", '{{range .}}{{range .items}}{{.metadata.name}}{{"\\n"}}{{end}}{{end}}', "p1\np2\n"),
    ("go names", "{{range .}}{{range .Items}}{{.Spec.CIDR}} {{end}}{{end}}", "10.0.0.0/24 10.1.0.0/24 "),
    ("promoted metadata", "{{with index . 0}}{{.ResourceVersion}} {{.Kind}} {{.TypeMeta.kind}}{{end}}",
     "9 IPPoolList IPPoolList"),
    ("object meta", "{{with index . 0}}{{with index .Items 0}}{{.ObjectMeta.Name}}/{{.Name}}{{end}}{{end}}",
     "p1/p1"),
    ("unset field", "{{with index . 0}}[{{(index .Items 1).Spec.NATOutgoing}}]{{end}}", "[]"),
    ("go values", "{{with index (index . 0).Items 0}}{{.Spec.NATOutgoing}} {{.Spec.Order}} {{.Spec.AllowedUses}} "
                  "{{.Labels}}{{end}}", "true 2.5 [Workload Tunnel] map[a:1 b:2]"),
    ("trim markers", "a  {{- 1 -}}  \n b", "a1b"),
    ("comment", "x{{/* not printed */}}y{{- /* trimmed */ -}} z", "xyz"),
    ("raw string", "{{`a\\n`}}", "a\\n"),
    ("string escapes", '{{"tab\\there \\u00e9 \\x41"}}', "tab\there \u00e9 A"),
    ("if else if else", '{{range (index . 0).Items}}{{if .spec.natOutgoing}}nat{{else if eq .metadata.name "p2"}}'
                        "p2{{else}}none{{end}};{{end}}", "nat;p2;"),
    ("range index", "{{range $i, $p := (index . 0).Items}}{{$i}}:{{$p.Name}} {{end}}", "0:p1 1:p2 "),
    ("range map sorted", "{{range $k, $v := (index (index . 0).Items 0).Labels}}{{$k}}={{$v}},{{end}}", "a=1,b=2,"),
    ("range else", "{{range (index . 0).Missing}}x{{else}}empty{{end}}", "empty"),
    ("with else", "{{with (index . 0).Missing}}x{{else}}none{{end}}", "none"),
    ("variables", '{{$x := "a"}}{{if true}}{{$x = "b"}}{{end}}{{$x}}', "b"),
    ("root variable", "{{range (index . 0).Items}}{{len $}}{{end}}", "11"),
    ("pipeline", '{{(index . 0).Items | len | printf "%03d"}}', "002"),
    ("printf", '{{printf "%-4s|%5.1f|%d|%v|%q|%t|%%" "ab" 2.25 7 nil "x" true}}', 'ab  |  2.2|7||"x"|true|%'),
    ("print", '{{print "a" 1 2 "b"}}', "a1 2b"),
    ("join", '{{join (index (index . 0).Items 0).Spec.AllowedUses ", "}}', "Workload, Tunnel"),
    ("joinAndTruncate", '{{joinAndTruncate (index (index . 0).Items 0).Spec.AllowedUses "," 8}}', "Workl..."),
    ("comparisons", "{{lt 1 2}} {{ge 2 2}} {{ne 1 1}} {{eq 1 2 1}} {{not 0}}", "true true false true true"),
    ("and or", '{{and 1 "" 3}}|{{or 0 "" "z"}}|{{or 0 ""}}', "|z|"),
]


@pytest.mark.parametrize("case,template,want", CASES, ids=[c[0] for c in CASES])
def test_supported(case: str, template: str, want: str) -> None:
    assert execute(template, DATA) == want


ERRORS = [
    ('{{define "x"}}y{{end}}', "template: get:1: {{define}} is not supported by calicoctl's go-template subset"),
    ("{{block \"x\" .}}y{{end}}", "template: get:1: {{block}} is not supported by calicoctl's go-template subset"),
    ("{{range .}}{{break}}{{end}}", "template: get:1: {{break}} is not supported by calicoctl's go-template subset"),
    ("{{with .}}{{else with .}}{{end}}", "template: get:1: {{else with}} is not supported by calicoctl's "
                                         "go-template subset"),
    ("{{slice . 1}}", 'template: get:1: function "slice" is not supported by calicoctl\'s go-template subset'),
    ("{{nope}}", 'template: get:1: function "nope" not defined'),
    ("a\n{{end}}", "template: get:2: unexpected {{end}}"),
    ("{{if 1}}", "template: get:1: unexpected EOF"),
    ("{{.x", "template: get:1: unclosed action"),
    ("{{}}", "template: get:1: missing value for command"),
    ("{{$y}}", 'template: get:1: undefined variable "$y"'),
    ('{{"a" "b"}}', "template: get:1: can't give argument to non-function 'a'"),
    ("{{range 3}}{{end}}", "template: get:1: range can't iterate over 3"),
    ("{{index . 4}}", 'template: get:1: executing "get" at <index>: error calling index: index out of range: 4'),
    ('{{(index . 0).kind.x}}', 'template: get:1: executing "get" at <.x>: can\'t evaluate field x in type string'),
]


@pytest.mark.parametrize("template,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_refused(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        execute(template, DATA)
    assert str(err.value) == message
