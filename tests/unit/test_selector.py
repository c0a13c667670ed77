"""Unit tests for datastore.selector (pure logic, no I/O except one import-cost subprocess)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from datastore.selector import (
    MAX_LABEL_LENGTH,
    Selector,
    SelectorError,
    namespace_selector_to_endpoint_selector,
    parse_selector,
    validate_selector,
)

REPO = Path(__file__).resolve().parents[2]

# (expression, labels, expected)
EVAL_CASES: list[tuple[str, dict[str, str], bool]] = [
    # ==
    ('a == "b"', {"a": "b"}, True),
    ('a == "b"', {"a": "b", "c": "d"}, True),
    ('a == "b"', {"a": "c"}, False),
    ('a == "b"', {}, False),
    ("a == 'a'", {"a": "a"}, True),
    ('a == ""', {"a": ""}, True),
    ('a == ""', {}, False),
    # != (true when absent)
    ('a != "b"', {"a": "a"}, True),
    ('a != "a"', {}, True),
    ('a != "a"', {"a": "a"}, False),
    # in / not in
    ('a in {"a", "b"}', {"a": "b"}, True),
    ('a in {"a", "b"}', {"a": "c"}, False),
    ('a in {"a", "b"}', {}, False),
    ("a in {\"'\", '\"', \"c\"}", {"a": '"'}, True),
    ("a in {\"'\", '\"', \"c\"}", {"a": "'"}, True),
    ('a in {}', {"a": ""}, False),
    ('a in {"x",}', {"a": "x"}, True),
    ('a not in {"d", "e"}', {"a": "a"}, True),
    ('a not in {"d", "e"}', {"a": "d"}, False),
    ('a not in {"d", "e"}', {}, True),
    ('a not in {}', {"a": "x"}, True),
    ('a notin {"d"}', {"a": "d"}, False),
    # contains / starts with / ends with (false when absent)
    ('a contains "a"', {"a": "bab"}, True),
    ('a contains "a"', {"a": "b"}, False),
    ('a contains "a"', {"b": "aaa"}, False),
    ('a contains ""', {"a": "x"}, True),
    ('a starts with "a"', {"a": "abb"}, True),
    ('a starts with "a"', {"a": "baa"}, False),
    ('a starts with "a"', {}, False),
    ('a startswith "ab"', {"a": "abc"}, True),
    ('a ends with "a"', {"a": "bba"}, True),
    ('a ends with "a"', {"a": "aab"}, False),
    ('a ends with "a"', {}, False),
    ('a  ends   with "a"', {"a": "xa"}, True),
    # has / !has
    ("has(a)", {"a": ""}, True),
    ("has(b)", {"a": "b"}, False),
    ("!has(a)", {"b": "b"}, True),
    ("!has(a)", {"a": "b"}, False),
    ("has( a )", {"a": "1"}, True),
    # all() / global() / empty
    ("", {}, True),
    (" \t ", {"a": "b"}, True),
    ("all()", {}, True),
    ("all( )", {"a": "b"}, True),
    ("!all()", {"a": "b"}, False),
    ("global()", {}, True),
    ("global()", {"a": "b"}, True),
    # negation
    ("!!has(b)", {"a": "b"}, False),
    ("!!! has(a)", {"a": "b"}, False),
    ('!a == "a1"', {"a": "a1"}, False),
    ('!a in {"a"}', {"a": "b"}, True),
    ("!(!has(a) || has(b))", {"a": "a"}, True),
    # && / || / precedence
    ("a == 'a1' && b == 'b1'", {"a": "a1", "b": "b1"}, True),
    ("a == 'a1' && b != 'b1'", {"a": "a1", "b": "b1"}, False),
    ("a != 'a1' || b != 'b1'", {"a": "a1", "b": "b1"}, False),
    ("a == 'a1' || b != 'b1'", {"a": "a1", "b": "b1"}, True),
    ("! a == 'a1' || ! b == 'b1'", {"a": "a1", "b": "b1"}, False),
    ("has(a) || has(b) && has(c)", {"a": "1"}, True),  # || binds looser than &&
    ("(has(a) || has(b)) && has(c)", {"a": "1"}, False),
    ("!has(a) && has(b)", {"b": "1"}, True),  # ! binds tighter than &&
    ("!(has(a) && has(b))", {"a": "1"}, True),
    ("has(a) && has(b) || has(c) && has(d)", {"c": "1", "d": "1"}, True),
    ("has(a) && (has(b) || has(c)) && has(d)", {"a": "1", "c": "1", "d": "1"}, True),
    ("((((has(a)))))", {"a": "1"}, True),
    # label keys with prefixes and allowed punctuation
    ("projectcalico.org/name == 'kube-system'", {"projectcalico.org/name": "kube-system"}, True),
    ("k8s-app.v1_x == 'dns'", {"k8s-app.v1_x": "dns"}, True),
    ("has(pcns.projectcalico.org/name)", {"pcns.projectcalico.org/name": "x"}, True),
    # keywords are only operators right after a label
    ("in == 'x' && contains == 'y'", {"in": "x", "contains": "y"}, True),
    ("has == 'h'", {"has": "h"}, True),
    # whitespace: none, tabs, lots
    ("a=='b'&&c!='d'", {"a": "b"}, True),
    ('a\t==\t"b"\t||\thas(c)', {"c": ""}, True),
    ('   a   in   {  "b"  ,  "c"  }   ', {"a": "c"}, True),
    ('a in{"b"}', {"a": "b"}, True),
    # escaping (pycalico extension)
    (r'a == "say \"hi\""', {"a": 'say "hi"'}, True),
    (r"a == 'it\'s'", {"a": "it's"}, True),
    (r'a == "both \" and '"'"'"', {"a": "both \" and '"}, True),
    (r'a == "back\\slash"', {"a": "back\\slash"}, True),
    (r'a == "trailing\\"', {"a": "trailing\\"}, True),
    (r'a == "keep\n"', {"a": "keep\\n"}, True),  # unknown escape kept literally
    (r'a in {"x\"y", "z"}', {"a": 'x"y'}, True),
    ('a == "unicode é ✓"', {"a": "unicode é ✓"}, True),
    ('a == "has(x) && b"', {"a": "has(x) && b"}, True),
]

# (expression, error position)
INVALID_CASES: list[tuple[str, int]] = [
    ("b == b", 5),  # label on rhs
    ("b contains b", 11),
    ("'b1' == b", 0),  # literal on lhs
    ("b", 1),  # bare label
    ("a b", 2),  # garbage after label
    ("!", 1),
    ('foo == "bar" &', 13),
    ('foo == "bar" |', 13),
    ("foo != ||", 7),
    ('foo in {"", ||', 12),
    ('foo in ""', 7),  # expected set literal
    ('"FOO', 4),  # unterminated string: position where the quote is missing
    ("\"FOO'", 5),
    ("'FOO", 4),
    ("(", 1),
    ('(a == "foo"', 11),
    (")", 0),
    ("()", 1),
    ("%", 0),
    ('a == "b" && %', 12),
    ('a == "b" || %', 12),
    ("a ", 2),
    ("has(foo) &&", 11),
    ('a = "b"', 2),  # single =
    ("has()", 4),
    ("has(a", 5),
    ("all(x)", 4),
    ("global( y)", 8),
    ("has (a)", 4),  # label 'has' followed by '('
    ('a starts "x"', 9),
    ("a not {}", 6),
    ('a in {"x" "y"}', 10),
    ('a in {,}', 6),
    ('a in {"x"', 9),
    ('has(a) has(b)', 7),
    ('has(a) && (has(b)))', 18),
    ('a == "b"\n&& has(c)', 8),  # newline is not whitespace (as upstream)
    (r'a == "esc\"', 11),  # escaped quote does not close the string
    ("a == 'x' &&& has(b)", 11),
    ("a in {'x'} == 'y'", 11),
]

# (input, canonical, expected upstream unique id or "")
CANONICAL_CASES: list[tuple[str, str, str]] = [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ("a == \"'\"", "a == \"'\"", ""),
    ("a == '\"'", "a == '\"'", ""),
    ("a contains '\"'", "a contains '\"'", ""),
    ("a startswith '\"'", "a starts with '\"'", ""),
    ("a endswith \"'\"", "a ends with \"'\"", ""),
    ("a!='\"'", "a != '\"'", ""),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', ""),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    ("a not in {'b',}", 'a not in {"b"}', ""),
    ("a in {}", "a in {}", ""),
    ("global()", "global()", ""),
    ("!(k == 'v')", '!k == "v"', ""),
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")', ""),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'c', 'b'}))",
     '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})', ""),
    ("(a == 'x' && b == 'y') && c == 'z'", '((a == "x" && b == "y") && c == "z")', ""),
    ("!!has(a)", "has(a)", ""),
    ("!(!has(a))", "has(a)", ""),  # double negation removed (idempotent canonical form)
    (r"a == 'both \" and \''", r'a == "both \" and '"'"'"', ""),
    (r'a == "back\\slash"', r'a == "back\\slash"', ""),
]


def _all_valid_expressions() -> list[str]:
    return sorted({c[0] for c in EVAL_CASES} | {c[0] for c in CANONICAL_CASES})


def test_tables_are_big_enough() -> None:
    assert len(EVAL_CASES) >= 40
    assert len(INVALID_CASES) >= 15


@pytest.mark.parametrize(("expr", "labels", "expected"), EVAL_CASES)
def test_evaluate(expr: str, labels: dict[str, str], expected: bool) -> None:
    sel = parse_selector(expr)
    assert sel.evaluate(labels) is expected
    # The canonical form must select exactly the same thing.
    assert parse_selector(sel.canonical).evaluate(labels) is expected


@pytest.mark.parametrize(("expr", "position"), INVALID_CASES)
def test_invalid(expr: str, position: int) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(expr)
    err = info.value
    assert err.position == position, str(err)
    assert err.text == expr
    assert str(err) == f"invalid selector at position {position}: {err.message}: {expr}"
    assert isinstance(err, ValueError)
    with pytest.raises(SelectorError):
        validate_selector(expr)


def test_error_message_for_unterminated_string() -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector('a == "b')
    assert str(info.value) == (
        "invalid selector at position 7: expected '\"' to end the string started at position 5: a == \"b"
    )


def test_label_length_limit() -> None:
    key = "k" * MAX_LABEL_LENGTH
    assert parse_selector(f"has({key})").evaluate({key: ""})
    assert parse_selector(f"{key} == 'v'").evaluate({key: "v"})
    with pytest.raises(SelectorError) as info:
        parse_selector(f"a == 'v' && {key}k == 'v'")
    assert info.value.position == 12
    with pytest.raises(SelectorError):
        parse_selector(f"has({key}k)")


@pytest.mark.parametrize(("expr", "canonical", "uid"), CANONICAL_CASES)
def test_canonical(expr: str, canonical: str, uid: str) -> None:
    sel = parse_selector(expr)
    assert sel.canonical == canonical
    assert str(sel) == canonical
    again = parse_selector(canonical)
    assert again.canonical == canonical
    assert again == sel and hash(again) == hash(sel)
    assert again.unique_id() == sel.unique_id()
    if uid:
        assert sel.unique_id() == uid  # same IP-set id as upstream Calico


@pytest.mark.parametrize("expr", _all_valid_expressions())
def test_canonical_round_trip_is_idempotent(expr: str) -> None:
    canonical = parse_selector(expr).canonical
    assert parse_selector(canonical).canonical == canonical


def test_unique_id_stable_and_shaped() -> None:
    sel = parse_selector("a == 'b' && has(c)")
    uid = sel.unique_id()
    assert uid == sel.unique_id()
    assert uid == parse_selector('(a == "b"&&has(c))').unique_id()
    assert uid.startswith("s:") and len(uid) == 2 + 38  # SHA-224, base64url, no padding
    assert "=" not in uid and "+" not in uid and "/" not in uid
    assert uid != parse_selector("a == 'b' || has(c)").unique_id()
    assert uid == Selector(parse_selector("a == 'b' && has(c)").root).unique_id()
    # Fixed value: a change here would rename every IP set in a running cluster.
    assert parse_selector("has(a)").unique_id() == "s:JpRGrxZ4kdS6g7WoF-uG_g7qlh2ipw2zGYBMpQ"


def test_equality_and_hash() -> None:
    a = parse_selector('a in {"y", "x"}')
    b = parse_selector("a in {'x','y','x'}")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != parse_selector('a in {"x"}')
    assert a != "a in {\"x\", \"y\"}"
    assert repr(a) == "Selector('a in {\"x\", \"y\"}')"


def test_parse_is_cached() -> None:
    assert parse_selector("has(cached)") is parse_selector("has(cached)")
    assert hasattr(parse_selector, "cache_info")


def test_validate_selector_returns_text_unchanged() -> None:
    text = "  a ==  'b'  "
    assert validate_selector(text) == text
    assert validate_selector("") == ""


def test_non_string_rejected() -> None:
    with pytest.raises(TypeError):
        parse_selector(42)  # type: ignore[arg-type]


def test_selector_error_pickles() -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector("a ==")
    clone = pickle.loads(pickle.dumps(info.value))
    assert (clone.message, clone.position, clone.text) == (
        info.value.message, info.value.position, info.value.text)
    assert str(clone) == str(info.value)


def test_global_evaluates_true_like_upstream() -> None:
    assert parse_selector("global()").evaluate({})
    assert parse_selector("global() && has(a)").evaluate({"a": "1"})
    assert not parse_selector("!global()").evaluate({})


@pytest.mark.parametrize(("ns_selector", "expected"), [
    ("all()", "has(projectcalico.org/namespace)"),
    ("global()", "!has(projectcalico.org/namespace)"),
    ("!global()", "has(projectcalico.org/namespace)"),
    ("name == 'dev'", 'pcns.name == "dev"'),
    ("name == 'dev' || global()", '(pcns.name == "dev" || !has(projectcalico.org/namespace))'),
    ("has(a) && a not in {'all()'}", '(has(pcns.a) && pcns.a not in {"all()"})'),
])
def test_namespace_selector_conversion(ns_selector: str, expected: str) -> None:
    assert namespace_selector_to_endpoint_selector(ns_selector).canonical == expected


def test_global_namespace_selector_picks_only_non_namespaced() -> None:
    sel = namespace_selector_to_endpoint_selector("global()")
    host_endpoint = {"role": "edge"}
    pod = {"projectcalico.org/namespace": "dev", "pcns.name": "dev"}
    assert sel.evaluate(host_endpoint)
    assert not sel.evaluate(pod)
    everything_namespaced = namespace_selector_to_endpoint_selector("all()")
    assert everything_namespaced.evaluate(pod) and not everything_namespaced.evaluate(host_endpoint)


def test_with_label_prefix() -> None:
    sel = parse_selector("!(k == 'v' && has(t)) || a in {'b'} || x starts with 'y'")
    assert sel.with_label_prefix("pcsa.").canonical == (
        '(!(pcsa.k == "v" && has(pcsa.t)) || pcsa.a in {"b"} || pcsa.x starts with "y")')
    assert sel.canonical.startswith("(!(k ==")  # original untouched


def test_import_is_stdlib_only_and_cheap() -> None:
    code = (
        "import sys, time\n"
        "before = set(sys.modules)\n"
        "t = time.perf_counter()\n"
        "import datastore.selector\n"
        "elapsed = time.perf_counter() - t\n"
        "print(elapsed)\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    elapsed, new_modules = float(out[0]), set(out[1].split())
    assert new_modules <= {"datastore", "datastore.selector"}, new_modules
    assert elapsed < 0.1, elapsed  # ~1 ms with bytecode cached, ~10 ms compiling
