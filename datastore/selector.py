"""Calico label selectors: the one parser and evaluator every pycalico component uses.

A selector is a boolean expression over a set of labels (``str -> str``). The
language follows upstream Calico (libcalico-go ``lib/selector``)::

    k == "v"              label k present with value v
    k != "v"              k absent, or present with another value
    k in {"a", "b"}       k present with one of the values (``{}`` matches nothing)
    k not in {"a", "b"}   k absent, or present with none of the values
    k contains "s"        k present and its value contains s
    k starts with "s"     k present and its value starts with s
    k ends with "s"       k present and its value ends with s
    has(k)                k present (any value); ``!has(k)``: k absent
    all()                 always true
    global()              always true when evaluated (see below)
    !e    e && f    e || f    ( e )

Precedence is ``!`` (tightest, applies to one operation or parenthesised group),
then ``&&``, then ``||``. Both binary operators are left-associative and
short-circuit. An empty (or blank) selector is ``all()``.

Lexical details, as upstream:

* Whitespace is space and tab only; any other character outside a string
  (newline included) is an error.
* Label keys are runs of ``[A-Za-z0-9_./-]``, 1 to 512 characters; a DNS prefix
  such as ``projectcalico.org/name`` is simply part of the key.
* Operator words are recognised only right after a label key, so a key may be
  spelled ``in`` or ``contains`` elsewhere. As upstream, the space inside
  ``starts with``, ``ends with`` and ``not in`` is optional (``startswith``).
* ``has(``, ``all(`` and ``global(`` must be written without a space before the
  parenthesis; spaces are allowed inside the parentheses.
* A set literal may be empty and may have one trailing comma: ``{"a",}``.
* Runs of ``!`` collapse: ``!!has(a)`` is ``has(a)``.

String literals are quoted with ``"`` or ``'``. **Escaping** (a pycalico
extension; upstream has no escapes): inside a string, a backslash followed by
``\\``, ``"`` or ``'`` stands for that character, so ``a == "say \\"hi\\""`` and
``a == 'it\\'s'`` work and a value may contain both quote characters. A
backslash followed by any other character is kept literally (``"a\\b"`` is the
three characters ``a\\b``), which keeps every upstream selector whose strings
have no backslash before a quote or backslash meaning the same thing. (Label
values accepted by Kubernetes can contain neither quotes nor backslashes, so
this only matters for hand-written selectors.)

**global()**: upstream parses ``global()`` anywhere and evaluates it as true,
exactly like ``all()``; its meaning comes from context. It is intended for a
rule's ``namespaceSelector``, where upstream's rule conversion rewrites the
``pcns.``-prefixed namespace selector so that ``all()`` becomes
``has(projectcalico.org/namespace)`` (any namespaced endpoint) and ``global()``
becomes ``!has(projectcalico.org/namespace)`` (only non-namespaced entities:
host endpoints, global network sets). :func:`namespace_selector_to_endpoint_selector`
performs that rewrite on the syntax tree (upstream does a text replace).
:meth:`Selector.evaluate` keeps upstream's "global() is true" so a selector
evaluates identically in every component.

**Canonical form** (:attr:`Selector.canonical`) matches upstream's ``String()``:
``&&``/``||`` groups always parenthesised (``(a == "b" && has(c))``), single
spaces around operators, set members sorted and de-duplicated, values quoted
with ``"`` unless they contain ``"`` (then ``'``). Values that contain both
quote characters or a backslash are written with ``"`` and backslash escapes.
Double negation is removed when the tree is built, so the canonical form is
idempotent (upstream prints ``!(!has(a))`` as ``!!has(a)``; we print
``has(a)``). :meth:`Selector.unique_id` is upstream's IP-set id:
``"s:" + base64url(SHA-224("s:" + canonical))`` without padding.

Errors raise :class:`SelectorError` (a ``ValueError``) carrying the 0-based
character offset of the problem. This module imports only the stdlib and does
no work at import time beyond defining classes (it is on the CNI hot path).
"""
from __future__ import annotations

import functools

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only; keeps the import graph minimal
    from collections.abc import Mapping

__all__ = [
    "MAX_LABEL_LENGTH",
    "NAMESPACE_LABEL",
    "NAMESPACE_LABEL_PREFIX",
    "Node",
    "Selector",
    "SelectorError",
    "namespace_selector_to_endpoint_selector",
    "parse_selector",
    "validate_selector",
]

MAX_LABEL_LENGTH = 512
NAMESPACE_LABEL = "projectcalico.org/namespace"
NAMESPACE_LABEL_PREFIX = "pcns."

_WHITESPACE = " \t"
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_ESCAPABLE = "\\\"'"


class SelectorError(ValueError):
    """An invalid selector; ``position`` is the 0-based character offset of the error."""

    def __init__(self, message: str, position: int, text: str) -> None:
        self.message = message
        self.position = position
        self.text = text
        super().__init__(f"invalid selector at position {position}: {message}: {text}")

    def __reduce__(self) -> tuple[type[SelectorError], tuple[str, int, str]]:
        return (SelectorError, (self.message, self.position, self.text))


# --------------------------------------------------------------------------- AST


def _quote(value: str) -> str:
    """Quote a string literal so that parsing it gives back ``value``."""
    if "\\" not in value:
        if '"' not in value:
            return f'"{value}"'
        if "'" not in value:
            return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class Node:
    """Base class of selector syntax-tree nodes. Nodes are immutable."""

    __slots__ = ()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def write(self, out: list[str]) -> None:
        """Append this node's canonical text fragments to ``out``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        out: list[str] = []
        self.write(out)
        return f"<{type(self).__name__} {''.join(out)}>"


class AllNode(Node):
    __slots__ = ()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def write(self, out: list[str]) -> None:
        out.append("all()")


class GlobalNode(Node):
    """``global()``: true when evaluated, as upstream (see module docstring)."""

    __slots__ = ()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def write(self, out: list[str]) -> None:
        out.append("global()")


class HasNode(Node):
    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def write(self, out: list[str]) -> None:
        out.append(f"has({self.label})")


class _LabelValueNode(Node):
    """A ``label <op> "value"`` comparison."""

    __slots__ = ("label", "value")
    op = ""

    def __init__(self, label: str, value: str) -> None:
        self.label = label
        self.value = value

    def write(self, out: list[str]) -> None:
        out.append(f"{self.label} {self.op} {_quote(self.value)}")


class EqNode(_LabelValueNode):
    __slots__ = ()
    op = "=="

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.label) == self.value


class NeNode(_LabelValueNode):
    """``k != "v"``: true when k is absent."""

    __slots__ = ()
    op = "!="

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.label) != self.value


class ContainsNode(_LabelValueNode):
    __slots__ = ()
    op = "contains"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label)
        return got is not None and self.value in got


class StartsWithNode(_LabelValueNode):
    __slots__ = ()
    op = "starts with"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label)
        return got is not None and got.startswith(self.value)


class EndsWithNode(_LabelValueNode):
    __slots__ = ()
    op = "ends with"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label)
        return got is not None and got.endswith(self.value)


class _LabelSetNode(Node):
    """A ``label [not] in {...}`` test; ``values`` is sorted and de-duplicated."""

    __slots__ = ("label", "values", "_set")
    op = ""

    def __init__(self, label: str, values: tuple[str, ...] | list[str]) -> None:
        self.label = label
        self.values = tuple(sorted(set(values)))
        self._set = frozenset(self.values)

    def write(self, out: list[str]) -> None:
        members = ", ".join(_quote(v) for v in self.values)
        out.append(f"{self.label} {self.op} {{{members}}}")


class InNode(_LabelSetNode):
    __slots__ = ()
    op = "in"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label)
        return got is not None and got in self._set


class NotInNode(_LabelSetNode):
    """``k not in {...}``: true when k is absent."""

    __slots__ = ()
    op = "not in"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label)
        return got is None or got not in self._set


class NotNode(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self.operand = operand

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def write(self, out: list[str]) -> None:
        out.append("!")
        self.operand.write(out)


class _GroupNode(Node):
    __slots__ = ("operands",)
    joiner = ""

    def __init__(self, operands: tuple[Node, ...] | list[Node]) -> None:
        self.operands = tuple(operands)

    def write(self, out: list[str]) -> None:
        out.append("(")
        first = True
        for operand in self.operands:
            if not first:
                out.append(self.joiner)
            first = False
            operand.write(out)
        out.append(")")


class AndNode(_GroupNode):
    __slots__ = ()
    joiner = " && "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        for operand in self.operands:
            if not operand.evaluate(labels):
                return False
        return True


class OrNode(_GroupNode):
    __slots__ = ()
    joiner = " || "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        for operand in self.operands:
            if operand.evaluate(labels):
                return True
        return False


def _negate(node: Node) -> Node:
    """``!node``, removing a double negation."""
    if isinstance(node, NotNode):
        return node.operand
    return NotNode(node)


# --------------------------------------------------------------------- tokenizer

# Token kinds.
_EOF, _LABEL, _STRING, _LBRACE, _RBRACE, _COMMA = range(6)
_EQ, _NE, _IN, _NOT_IN, _CONTAINS, _STARTS_WITH, _ENDS_WITH = range(6, 13)
_NOT, _AND, _OR, _LPAREN, _RPAREN, _HAS, _ALL, _GLOBAL = range(13, 21)

_FIXED_SPELLING = {
    _LBRACE: "'{'",
    _RBRACE: "'}'",
    _COMMA: "','",
    _EQ: "'=='",
    _NE: "'!='",
    _IN: "'in'",
    _NOT_IN: "'not in'",
    _CONTAINS: "'contains'",
    _STARTS_WITH: "'starts with'",
    _ENDS_WITH: "'ends with'",
    _NOT: "'!'",
    _AND: "'&&'",
    _OR: "'||'",
    _LPAREN: "'('",
    _RPAREN: "')'",
    _ALL: "'all()'",
    _GLOBAL: "'global()'",
}

_VALUE_OPS: dict[int, type[_LabelValueNode]] = {
    _EQ: EqNode,
    _NE: NeNode,
    _CONTAINS: ContainsNode,
    _STARTS_WITH: StartsWithNode,
    _ENDS_WITH: EndsWithNode,
}

_OPERATORS_HINT = "'==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with'"

# A token: (kind, value, position of its first character).
_Token = tuple[int, str, int]


def _describe(tok: _Token) -> str:
    kind, value, _ = tok
    if kind == _EOF:
        return "end of selector"
    if kind == _LABEL:
        return f"label {value!r}"
    if kind == _STRING:
        return f"string {_quote(value)}"
    if kind == _HAS:
        return f"'has({value})'"
    return _FIXED_SPELLING[kind]


class _Tokenizer:
    __slots__ = ("text", "n", "tokens")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.tokens: list[_Token] = []

    def error(self, message: str, position: int) -> SelectorError:
        return SelectorError(message, position, self.text)

    def skip_ws(self, i: int) -> int:
        text, n = self.text, self.n
        while i < n and text[i] in _WHITESPACE:
            i += 1
        return i

    def read_label(self, i: int) -> int:
        """Return the end of the label key starting at ``i`` (``i`` if there is none)."""
        text, n = self.text, self.n
        j = i
        while j < n and text[j] in _LABEL_CHARS:
            j += 1
        if j - i > MAX_LABEL_LENGTH:
            raise self.error(f"label name longer than {MAX_LABEL_LENGTH} characters", i)
        return j

    def read_string(self, start: int) -> int:
        """Append the string literal opened at ``start``; return the index after it."""
        text = self.text
        quote = text[start]
        i = start + 1
        end = text.find(quote, i)
        if end >= 0 and "\\" not in text[i:end]:
            self.tokens.append((_STRING, text[i:end], start))
            return end + 1
        buf: list[str] = []
        n = self.n
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and text[i + 1] in _ESCAPABLE:
                buf.append(text[i + 1])
                i += 2
                continue
            if c == quote:
                self.tokens.append((_STRING, "".join(buf), start))
                return i + 1
            buf.append(c)
            i += 1
        raise self.error(f"expected {quote!r} to end the string started at position {start}", n)

    def read_operator_word(self, i: int) -> int:
        """After a label key: read contains / starts with / ends with / not in / in."""
        text = self.text
        if text.startswith("contains", i):
            self.tokens.append((_CONTAINS, "", i))
            return i + 8
        for first, kind, second in (("starts", _STARTS_WITH, "with"), ("ends", _ENDS_WITH, "with"),
                                    ("not", _NOT_IN, "in")):
            if text.startswith(first, i):
                j = self.skip_ws(i + len(first))
                if not text.startswith(second, j):
                    raise self.error(f"expected {second!r} after {first!r}", j)
                self.tokens.append((kind, "", i))
                return j + len(second)
        if text.startswith("in", i):
            self.tokens.append((_IN, "", i))
            return i + 2
        label = self.tokens[-1][1]
        raise self.error(f"expected {_OPERATORS_HINT} after label {label!r}", i)

    def read_call(self, i: int, name: str, kind: int) -> int:
        """Read ``has(label)``, ``all()`` or ``global()``; ``i`` is at the name."""
        j = self.skip_ws(i + len(name) + 1)
        label = ""
        if kind == _HAS:
            end = self.read_label(j)
            if end == j:
                raise self.error("expected a label name in has()", j)
            label = self.text[j:end]
            j = self.skip_ws(end)
        if not self.text.startswith(")", j):
            raise self.error(f"expected ')' to close {name}(", j)
        self.tokens.append((kind, label, i))
        return j + 1

    def run(self) -> list[_Token]:
        text, n, tokens = self.text, self.n, self.tokens
        i = 0
        while True:
            i = self.skip_ws(i)
            if i >= n:
                tokens.append((_EOF, "", n))
                return tokens
            c = text[i]
            if c == "(":
                tokens.append((_LPAREN, "", i))
                i += 1
            elif c == ")":
                tokens.append((_RPAREN, "", i))
                i += 1
            elif c == '"' or c == "'":
                i = self.read_string(i)
            elif c == "{":
                tokens.append((_LBRACE, "", i))
                i += 1
            elif c == "}":
                tokens.append((_RBRACE, "", i))
                i += 1
            elif c == ",":
                tokens.append((_COMMA, "", i))
                i += 1
            elif c == "=":
                if not text.startswith("==", i):
                    raise self.error("expected '==' (a single '=' is not an operator)", i)
                tokens.append((_EQ, "", i))
                i += 2
            elif c == "!":
                if text.startswith("!=", i):
                    tokens.append((_NE, "", i))
                    i += 2
                else:
                    tokens.append((_NOT, "", i))
                    i += 1
            elif c == "&":
                if not text.startswith("&&", i):
                    raise self.error("expected '&&'", i)
                tokens.append((_AND, "", i))
                i += 2
            elif c == "|":
                if not text.startswith("||", i):
                    raise self.error("expected '||'", i)
                tokens.append((_OR, "", i))
                i += 2
            elif tokens and tokens[-1][0] == _LABEL:
                i = self.read_operator_word(i)
            elif text.startswith("has(", i):
                i = self.read_call(i, "has", _HAS)
            elif text.startswith("all(", i):
                i = self.read_call(i, "all", _ALL)
            elif text.startswith("global(", i):
                i = self.read_call(i, "global", _GLOBAL)
            elif c in _LABEL_CHARS:
                end = self.read_label(i)
                tokens.append((_LABEL, text[i:end], i))
                i = end
            else:
                raise self.error(f"unexpected character {c!r}", i)


# ------------------------------------------------------------------------ parser


class _Parser:
    __slots__ = ("text", "tokens", "pos")

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.pos = 0

    def error(self, message: str, tok: _Token) -> SelectorError:
        return SelectorError(message, tok[2], self.text)

    def parse(self) -> Node:
        if self.tokens[0][0] == _EOF:
            return AllNode()
        node = self.parse_or()
        tok = self.tokens[self.pos]
        if tok[0] != _EOF:
            raise self.error(f"unexpected {_describe(tok)}, expected '&&', '||' or end of selector", tok)
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.tokens[self.pos][0] == _OR:
            self.pos += 1
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else OrNode(operands)

    def parse_and(self) -> Node:
        operands = [self.parse_operation()]
        while self.tokens[self.pos][0] == _AND:
            self.pos += 1
            operands.append(self.parse_operation())
        return operands[0] if len(operands) == 1 else AndNode(operands)

    def parse_operation(self) -> Node:
        tokens = self.tokens
        negated = False
        while tokens[self.pos][0] == _NOT:
            negated = not negated
            self.pos += 1
        tok = tokens[self.pos]
        kind = tok[0]
        self.pos += 1
        node: Node
        if kind == _HAS:
            node = HasNode(tok[1])
        elif kind == _ALL:
            node = AllNode()
        elif kind == _GLOBAL:
            node = GlobalNode()
        elif kind == _LABEL:
            node = self.parse_comparison(tok[1])
        elif kind == _LPAREN:
            node = self.parse_or()
            close = tokens[self.pos]
            if close[0] != _RPAREN:
                raise self.error(f"expected ')' to match '(' at position {tok[2]}, got {_describe(close)}",
                                 close)
            self.pos += 1
        else:
            raise self.error(f"unexpected {_describe(tok)}, expected a label, has(), all(), "
                             "global(), '!' or '('", tok)
        return _negate(node) if negated else node

    def parse_comparison(self, label: str) -> Node:
        tokens = self.tokens
        op = tokens[self.pos]
        self.pos += 1
        node_class = _VALUE_OPS.get(op[0])
        if node_class is not None:
            value = tokens[self.pos]
            if value[0] != _STRING:
                raise self.error(f"expected a quoted string after {_describe(op)}, got {_describe(value)}",
                                 value)
            self.pos += 1
            return node_class(label, value[1])
        if op[0] == _IN or op[0] == _NOT_IN:
            return self.parse_set(label, op)
        raise self.error(f"expected {_OPERATORS_HINT} after label {label!r}, got {_describe(op)}", op)

    def parse_set(self, label: str, op: _Token) -> Node:
        tokens = self.tokens
        brace = tokens[self.pos]
        if brace[0] != _LBRACE:
            raise self.error(f"expected '{{' after {_describe(op)}, got {_describe(brace)}", brace)
        self.pos += 1
        values: list[str] = []
        while True:
            tok = tokens[self.pos]
            self.pos += 1
            if tok[0] == _RBRACE:
                break
            if tok[0] != _STRING:
                raise self.error(f"expected a quoted string or '}}' in set, got {_describe(tok)}", tok)
            values.append(tok[1])
            sep = tokens[self.pos]
            self.pos += 1
            if sep[0] == _RBRACE:
                break
            if sep[0] != _COMMA:
                raise self.error(f"expected ',' or '}}' in set, got {_describe(sep)}", sep)
        return InNode(label, values) if op[0] == _IN else NotInNode(label, values)


# -------------------------------------------------------------------------- API


class Selector:
    """A parsed selector. Immutable; equal (and hashed) by canonical form."""

    __slots__ = ("_root", "_canonical", "_unique_id")

    def __init__(self, root: Node) -> None:
        self._root = root
        out: list[str] = []
        root.write(out)
        self._canonical = "".join(out)
        self._unique_id: str | None = None

    @property
    def root(self) -> Node:
        return self._root

    @property
    def canonical(self) -> str:
        return self._canonical

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self._root.evaluate(labels)

    def unique_id(self) -> str:
        uid = self._unique_id
        if uid is None:
            import base64
            import hashlib

            digest = hashlib.sha224(("s:" + self._canonical).encode()).digest()
            uid = "s:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            self._unique_id = uid
        return uid

    def with_label_prefix(self, prefix: str) -> Selector:
        """A copy with every label key prefixed (upstream's PrefixVisitor), e.g. ``pcns.``."""
        return Selector(_rewrite(self._root, prefix, None, None))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __str__(self) -> str:
        return self._canonical

    def __repr__(self) -> str:
        return f"Selector({self._canonical!r})"


def _rewrite(node: Node, prefix: str, all_node: Node | None, global_node: Node | None) -> Node:
    """Copy ``node`` prefixing label keys; optionally substitute all()/global() leaves."""
    if isinstance(node, AllNode):
        return all_node if all_node is not None else node
    if isinstance(node, GlobalNode):
        return global_node if global_node is not None else node
    if isinstance(node, HasNode):
        return HasNode(prefix + node.label)
    if isinstance(node, _LabelValueNode):
        return type(node)(prefix + node.label, node.value)
    if isinstance(node, _LabelSetNode):
        return type(node)(prefix + node.label, node.values)
    if isinstance(node, NotNode):
        return _negate(_rewrite(node.operand, prefix, all_node, global_node))
    if isinstance(node, _GroupNode):
        return type(node)([_rewrite(op, prefix, all_node, global_node) for op in node.operands])
    raise TypeError(f"unknown selector node {node!r}")


@functools.lru_cache(maxsize=8192)
def parse_selector(text: str) -> Selector:
    """Parse ``text``; raises :class:`SelectorError`. Results are cached and shared."""
    if not isinstance(text, str):
        raise TypeError(f"selector must be a str, not {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate (JSON may carry one as a \udc9b escape)
            raise SelectorError("not valid UTF-8 (lone surrogate)", exc.start, text) from None
    tokens = _Tokenizer(text).run()
    return Selector(_Parser(text, tokens).parse())


def validate_selector(text: str) -> str:
    """Return ``text`` unchanged if it is a valid selector, else raise :class:`SelectorError`."""
    parse_selector(text)
    return text


def namespace_selector_to_endpoint_selector(text: str) -> Selector:
    """Turn a rule's ``namespaceSelector`` into a selector over endpoint labels.

    As upstream's rule conversion: label keys get the ``pcns.`` prefix (the
    profile labels that carry namespace labels onto endpoints), ``all()``
    becomes ``has(projectcalico.org/namespace)`` (every namespaced endpoint) and
    ``global()`` becomes ``!has(projectcalico.org/namespace)`` (non-namespaced
    host endpoints and global network sets only). An empty namespaceSelector
    means "not set" upstream; callers should handle that before calling (here
    it parses as ``all()``).
    """
    root = parse_selector(text).root
    return Selector(_rewrite(root, NAMESPACE_LABEL_PREFIX, HasNode(NAMESPACE_LABEL),
                             NotNode(HasNode(NAMESPACE_LABEL))))
