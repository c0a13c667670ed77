"""A small, explicit subset of Go's ``text/template`` for ``calicoctl get -o
go-template=...`` and ``-o go-template-file=...``.

Upstream executes the template over the slice of results ``get`` found (each
one resource, or a ``<Kind>List`` with ``.Items`` when no names were given), as
Go structs.  Here the data are the resources' JSON documents, and a field is
looked up by:

1. its JSON name (``{{.metadata.name}}``, ``{{.spec.cidr}}``);
2. else case-insensitively, so upstream's Go field names work
   (``{{.Spec.CIDR}}``, ``{{.Items}}``, ``{{.APIVersion}}``);
3. else, on a resource or list, in its metadata: ObjectMeta/ListMeta fields
   are promoted as in Go (``{{.Name}}``, ``{{.Namespace}}``, ``{{.Labels}}``);
   ``{{.ObjectMeta}}``/``{{.ListMeta}}`` are the metadata, ``{{.TypeMeta}}``
   the kind and apiVersion.

An unset field prints as nothing (Go prints its type's zero value, which we
do not know).  Values print as Go's ``%v`` does: ``true``/``false``, floats in
Go's shortest form, lists as ``[a b]``, mappings as ``map[k:v]`` (sorted keys).

Supported: text; ``{{/* comments */}}``; ``{{-``/``-}}`` whitespace trimming;
``{{pipeline}}`` with ``|``; fields ``.A.B``, ``.``, ``$``, ``$var.A``;
string (``"..."`` with Go escapes, and raw) and number literals, ``true``,
``false``, ``nil``; parentheses; ``{{$x := pipeline}}`` and ``{{$x = ...}}``;
``{{if}}``/``{{else if}}``/``{{else}}``/``{{end}}``; ``{{range pipeline}}``
(also ``{{range $i, $e := pipeline}}``, ``{{else}}``); ``{{with}}``
(``{{else}}``).  Functions: calicoctl's ``join LIST SEP`` and
``joinAndTruncate LIST SEP MAX``, and Go's ``len``, ``index``, ``printf``,
``print``, ``println``, ``not``, ``and``, ``or``, ``eq``, ``ne``, ``lt``,
``le``, ``gt``, ``ge``.

Anything else (``define``, ``template``, ``block``, ``break``, ``continue``,
other functions, methods) is refused with an error naming the construct, and
calicoctl exits 1 without printing partial output.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from calicoctl.kinds import go_float, join

NAME = "get"
_META_ALIASES = {"objectmeta", "listmeta"}
_UNSUPPORTED_KEYWORDS = {"define", "template", "block", "break", "continue"}
_UNSUPPORTED_FUNCS = {"call", "html", "js", "urlquery", "slice"}


class TemplateError(Exception):
    """A template cannot be parsed or executed (upstream-like ``template: get:LINE: ...``)."""


# --------------------------------------------------------------------------
# Lexing: text and actions.
# --------------------------------------------------------------------------


@dataclass
class Tok:
    kind: str  # field | var | string | number | ident | pipe | lparen | rparen | declare | assign | comma
    value: Any
    line: int


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<number>[-+]?(?:0x[0-9a-fA-F]+|\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+))
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "0": "\0"}


def _unquote(text: str, line: int) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = body[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise TemplateError(f"template: {NAME}:{line}: invalid syntax: {text}") from None
            i += 2 + width
        else:
            raise TemplateError(f"template: {NAME}:{line}: invalid syntax: {text}")
    return "".join(out)


def _tokens(action: str, line: int) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(action):
        m = _TOKEN.match(action, pos)
        if not m:
            raise TemplateError(f"template: {NAME}:{line}: unexpected {action[pos]!r} in command")
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        line += text.count("\n")
        if kind == "ws":
            continue
        if kind == "string":
            out.append(Tok("string", _unquote(text, line), line))
        elif kind == "raw":
            out.append(Tok("string", text[1:-1], line))
        elif kind == "number":
            value: Any = int(text, 0) if re.fullmatch(r"[-+]?(0x[0-9a-fA-F]+|\d+)", text) else float(text)
            out.append(Tok("number", value, line))
        else:
            out.append(Tok(str(kind), text, line))
    return out


@dataclass
class Chunk:
    text: str | None  # text, or None for an action
    tokens: list[Tok]
    line: int


def _chunks(src: str) -> list[Chunk]:
    chunks: list[Chunk] = []
    pos, line = 0, 1
    while True:
        start = src.find("{{", pos)
        if start < 0:
            chunks.append(Chunk(src[pos:], [], line))
            return chunks
        text = src[pos:start]
        inner_start = start + 2
        if src.startswith("- ", inner_start) or src.startswith("-\t", inner_start) or src.startswith("-\n", inner_start):
            text = text.rstrip(" \t\r\n")
            inner_start += 1
        chunks.append(Chunk(text, [], line))
        line += src[pos:start].count("\n")
        # Find the closing braces outside string literals.
        i, quote = inner_start, ""
        while i < len(src):
            c = src[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 2
                    continue
                if c == quote:
                    quote = ""
            elif c in "\"`":
                quote = c
            elif src.startswith("}}", i):
                break
            i += 1
        else:
            raise TemplateError(f"template: {NAME}:{line}: unclosed action")
        inner_end, pos = i, i + 2
        trim_after = False
        if inner_end - 1 >= inner_start and src[inner_end - 1] == "-" and src[inner_end - 2:inner_end - 1].isspace():
            inner_end -= 1
            trim_after = True
        action = src[inner_start:inner_end]
        stripped = action.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError(f"template: {NAME}:{line}: unclosed comment")
        else:
            chunks.append(Chunk(None, _tokens(action, line), line))
        line += action.count("\n")
        if trim_after:
            m = re.match(r"[ \t\r\n]*", src[pos:])
            assert m is not None
            line += m.group().count("\n")
            pos += m.end()


# --------------------------------------------------------------------------
# Parsing.
# --------------------------------------------------------------------------


@dataclass
class Operand:
    kind: str  # field | var | literal | sub | ident
    value: Any
    chain: list[str] = field(default_factory=list)


@dataclass
class Command:
    args: list[Operand]


@dataclass
class Pipeline:
    decl: list[str]
    assign: bool
    cmds: list[Command]
    line: int


@dataclass
class Text:
    text: str


@dataclass
class Action:
    pipe: Pipeline


@dataclass
class Branch:
    kind: str  # if | range | with
    pipe: Pipeline
    body: list["Node"]
    other: list["Node"] = field(default_factory=list)


Node = Union[Text, Action, Branch]


class _Parser:
    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        self.i = 0

    def parse(self) -> list[Node]:
        nodes, stop = self._list(())
        if stop is not None:
            raise TemplateError(f"template: {NAME}:{stop.line}: unexpected {{{{{stop.tokens[0].value}}}}}")
        return nodes

    def _list(self, stops: tuple[str, ...]) -> tuple[list[Node], Chunk | None]:
        nodes: list[Node] = []
        while self.i < len(self.chunks):
            c = self.chunks[self.i]
            self.i += 1
            if c.text is not None:
                if c.text:
                    nodes.append(Text(c.text))
                continue
            if not c.tokens:
                raise TemplateError(f"template: {NAME}:{c.line}: missing value for command")
            head = c.tokens[0]
            word = head.value if head.kind == "ident" else ""
            if word in ("end", "else"):
                if word not in stops and not (word == "else" and "else" in stops):
                    raise TemplateError(f"template: {NAME}:{c.line}: unexpected {{{{{word}}}}}")
                return nodes, c
            if word in _UNSUPPORTED_KEYWORDS:
                raise TemplateError(f"template: {NAME}:{c.line}: {{{{{word}}}}} is not supported by "
                                    "calicoctl's go-template subset")
            if word in ("if", "range", "with"):
                nodes.append(self._branch(word, c.tokens[1:], c.line))
                continue
            nodes.append(Action(self._pipeline(c.tokens, c.line, allow_decl=True)))
        if stops:
            raise TemplateError(f"template: {NAME}:{self.chunks[-1].line}: unexpected EOF")
        return nodes, None

    def _branch(self, kind: str, tokens: list[Tok], line: int) -> Branch:
        pipe = self._pipeline(tokens, line, allow_decl=True, range_decl=kind == "range")
        body, stop = self._list(("end", "else"))
        assert stop is not None
        branch = Branch(kind, pipe, body)
        if stop.tokens[0].value == "else":
            rest = stop.tokens[1:]
            if rest:
                if kind == "if" and rest[0].kind == "ident" and rest[0].value == "if":
                    # {{else if ...}}: a nested if sharing our {{end}}.
                    branch.other = [self._branch("if", rest[1:], stop.line)]
                    return branch
                raise TemplateError(f"template: {NAME}:{stop.line}: {{{{else {rest[0].value}}}}} is not "
                                    "supported by calicoctl's go-template subset")
            branch.other, stop = self._list(("end",))
            assert stop is not None
        return branch

    def _pipeline(self, tokens: list[Tok], line: int, allow_decl: bool = False,
                  range_decl: bool = False) -> Pipeline:
        decl: list[str] = []
        assign = False
        if allow_decl:
            names: list[str] = []
            j = 0
            while j < len(tokens) and tokens[j].kind == "var" and "." not in tokens[j].value:
                names.append(tokens[j].value)
                if j + 1 < len(tokens) and tokens[j + 1].kind == "comma" and range_decl:
                    j += 2
                    continue
                j += 1
                break
            if names and j < len(tokens) and tokens[j].kind in ("declare", "assign"):
                if len(names) > (2 if range_decl else 1):
                    raise TemplateError(f"template: {NAME}:{line}: too many declarations")
                decl, assign = names, tokens[j].kind == "assign"
                tokens = tokens[j + 1:]
        if not tokens:
            raise TemplateError(f"template: {NAME}:{line}: missing value for command")
        cmds: list[Command] = []
        args: list[Operand] = []
        k = 0
        while k < len(tokens):
            t = tokens[k]
            if t.kind == "pipe":
                if not args:
                    raise TemplateError(f"template: {NAME}:{line}: missing command")
                cmds.append(Command(args))
                args = []
                k += 1
                continue
            op, k = self._operand(tokens, k, line)
            args.append(op)
        if not args:
            raise TemplateError(f"template: {NAME}:{line}: missing command")
        cmds.append(Command(args))
        return Pipeline(decl, assign, cmds, line)

    def _operand(self, tokens: list[Tok], k: int, line: int) -> tuple[Operand, int]:
        t = tokens[k]
        if t.kind == "field":
            chain = [p for p in t.value.split(".") if p]
            return Operand("field", None, chain), k + 1
        if t.kind == "var":
            name, *chain = t.value.split(".")
            return Operand("var", name, chain), k + 1
        if t.kind in ("string", "number"):
            return Operand("literal", t.value), k + 1
        if t.kind == "ident":
            if t.value in ("true", "false"):
                return Operand("literal", t.value == "true"), k + 1
            if t.value == "nil":
                return Operand("literal", None), k + 1
            if t.value in _UNSUPPORTED_KEYWORDS or t.value in ("if", "range", "with", "else", "end"):
                raise TemplateError(f"template: {NAME}:{line}: unexpected {t.value!r} in command")
            return Operand("ident", t.value), k + 1
        if t.kind == "lparen":
            depth, j = 1, k + 1
            while j < len(tokens) and depth:
                depth += {"lparen": 1, "rparen": -1}.get(tokens[j].kind, 0)
                j += 1
            if depth:
                raise TemplateError(f"template: {NAME}:{line}: unclosed left paren")
            inner = self._pipeline(tokens[k + 1:j - 1], line)
            chain: list[str] = []
            if j < len(tokens) and tokens[j].kind == "field" and tokens[j].value != ".":
                chain = [p for p in tokens[j].value.split(".") if p]
                j += 1
            return Operand("sub", inner, chain), j
        raise TemplateError(f"template: {NAME}:{line}: unexpected {t.value!r} in operand")


def parse(src: str) -> list[Node]:
    return _Parser(_chunks(src)).parse()


# --------------------------------------------------------------------------
# Values as Go prints them.
# --------------------------------------------------------------------------


def go_format(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, list):
        return "[" + " ".join(go_format(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_format(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def truth(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v is None:
        return False
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict)):
        return len(v) > 0
    return True


_MISSING = object()


def lookup(value: Any, name: str) -> Any:
    """``value.name`` with the JSON/Go-name rules of the module docstring."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TemplateError(f"can't evaluate field {name} in type {_go_type(value)}")
    if name in value:
        return value[name]
    lower = name.lower()
    for k, v in value.items():
        if k.lower() == lower:
            return v
    meta = value.get("metadata")
    if isinstance(meta, dict):
        if lower in _META_ALIASES:
            return meta
        if lower == "typemeta":
            return {k: value[k] for k in ("kind", "apiVersion") if k in value}
        for k, v in meta.items():
            if k.lower() == lower:
                return v
    return None


def _go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    return "interface {}"


# --------------------------------------------------------------------------
# Functions.
# --------------------------------------------------------------------------


def _len(v: Any) -> int:
    if isinstance(v, (str, list, dict)):
        return len(v)
    raise TemplateError(f"error calling len: len of type {_go_type(v)}")


def _index(v: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(v, list):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateError("error calling index: cannot index slice/array with non-integer")
            if not 0 <= key < len(v):
                raise TemplateError(f"error calling index: index out of range: {key}")
            v = v[key]
        elif isinstance(v, dict):
            v = v.get(key)
        elif v is None:
            raise TemplateError("error calling index: index of untyped nil")
        else:
            raise TemplateError(f"error calling index: can't index item of type {_go_type(v)}")
    return v


_VERB = re.compile(r"%([-+ #0]*)(\d*)(?:\.(\d+))?([vsdqftxXeg%])")


def _printf(fmt: str, *args: Any) -> str:
    out, it = [], iter(args)

    def sub(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            arg = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in "vs":
            text = go_format(arg)
            if prec:
                text = text[: int(prec)]
            spec = "s"
        elif verb == "q":
            text, spec = json.dumps(go_format(arg), ensure_ascii=False), "s"
        elif verb in "dxX":
            if not isinstance(arg, int) or isinstance(arg, bool):
                return f"%!{verb}({_go_type(arg)}={go_format(arg)})"
            return format(arg, f"{flags}{width}{'d' if verb == 'd' else verb}")
        else:  # f e g t
            if verb == "t":
                text, spec = go_format(bool(arg)), "s"
            else:
                if not isinstance(arg, (int, float)) or isinstance(arg, bool):
                    return f"%!{verb}({_go_type(arg)}={go_format(arg)})"
                return format(float(arg), f"{flags}{width}{'.' + prec if prec else '.6' if verb != 'g' else ''}{verb}")
        align = "<" if "-" in flags else ">"
        return format(text, f"{align}{width}{spec}") if width else text

    out.append(_VERB.sub(sub, fmt))
    extra = list(it)
    if extra:
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(a)}={go_format(a)}" for a in extra) + ")")
    return "".join(out)


def _print(*args: Any) -> str:
    # Go's fmt.Sprint: spaces only between operands when neither is a string.
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_format(a)
    return out


def _cmp(op: str) -> Callable[..., bool]:
    def compare(a: Any, *bs: Any) -> bool:
        if not bs:
            raise TemplateError(f"error calling {op}: missing argument for comparison")
        for b in bs if op == "eq" else bs[:1]:
            if isinstance(a, (int, float)) != isinstance(b, (int, float)) and a is not None and b is not None:
                raise TemplateError(f"error calling {op}: incompatible types for comparison")
            if op == "eq" and a == b:
                return True
        if op == "eq":
            return False
        b = bs[0]
        try:
            return {"ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        except TypeError:
            raise TemplateError(f"error calling {op}: incompatible types for comparison") from None

    return compare


FUNCS: dict[str, Callable[..., Any]] = {
    "join": lambda items, sep: join(items, sep),
    "joinAndTruncate": lambda items, sep, n: join(items, sep, int(n)),
    "len": _len,
    "index": _index,
    "printf": _printf,
    "print": _print,
    "println": lambda *a: " ".join(go_format(x) for x in a) + "\n",
    "not": lambda a: not truth(a),
    "eq": _cmp("eq"),
    "ne": _cmp("ne"),
    "lt": _cmp("lt"),
    "le": _cmp("le"),
    "gt": _cmp("gt"),
    "ge": _cmp("ge"),
}


# --------------------------------------------------------------------------
# Execution.
# --------------------------------------------------------------------------


class _Exec:
    def __init__(self, data: Any) -> None:
        self.out: list[str] = []
        self.scopes: list[dict[str, Any]] = [{"$": data}]

    def var(self, name: str, line: int) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise TemplateError(f"template: {NAME}:{line}: undefined variable \"{name}\"")

    def run(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(go_format(value))
            else:
                self.branch(node, dot)

    def branch(self, node: Branch, dot: Any) -> None:
        self.scopes.append({})
        try:
            if node.kind == "range":
                value = self.pipeline(node.pipe, dot, declare=False)
                if isinstance(value, dict):
                    pairs = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, list):
                    pairs = list(enumerate(value))
                elif value is None:
                    pairs = []
                else:
                    raise TemplateError(f"template: {NAME}:{node.pipe.line}: range can't iterate over "
                                        f"{go_format(value)}")
                if not pairs:
                    self.run(node.other, dot)
                for key, elem in pairs:
                    decl = node.pipe.decl
                    if len(decl) == 1:
                        self.scopes[-1][decl[0]] = elem
                    elif len(decl) == 2:
                        self.scopes[-1][decl[0]] = key
                        self.scopes[-1][decl[1]] = elem
                    self.run(node.body, elem)
                return
            value = self.pipeline(node.pipe, dot)
            if truth(value):
                self.run(node.body, value if node.kind == "with" else dot)
            else:
                self.run(node.other, dot)
        finally:
            self.scopes.pop()

    def pipeline(self, pipe: Pipeline, dot: Any, declare: bool = True) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value, pipe.line)
        if declare and pipe.decl:
            name = pipe.decl[0]
            if pipe.assign:
                for scope in reversed(self.scopes):
                    if name in scope:
                        scope[name] = value
                        break
                else:
                    raise TemplateError(f"template: {NAME}:{pipe.line}: undefined variable \"{name}\"")
            else:
                self.scopes[-1][name] = value
        return value

    def command(self, cmd: Command, dot: Any, piped: Any, line: int) -> Any:
        first = cmd.args[0]
        if first.kind == "ident":
            name = first.value
            if name in ("and", "or"):
                args = [self.operand(a, dot, line) for a in cmd.args[1:]]
                if piped is not _MISSING:
                    args.append(piped)
                if not args:
                    raise TemplateError(f"template: {NAME}:{line}: wrong number of args for {name}")
                for a in args[:-1]:
                    if truth(a) != (name == "and"):
                        return a
                return args[-1]
            fn = FUNCS.get(name)
            if fn is None:
                if name in _UNSUPPORTED_FUNCS:
                    raise TemplateError(f"template: {NAME}:{line}: function \"{name}\" is not supported by "
                                        "calicoctl's go-template subset")
                raise TemplateError(f"template: {NAME}:{line}: function \"{name}\" not defined")
            args = [self.operand(a, dot, line) for a in cmd.args[1:]]
            if piped is not _MISSING:
                args.append(piped)
            try:
                return fn(*args)
            except TemplateError as e:
                raise TemplateError(f"template: {NAME}:{line}: executing \"{NAME}\" at <{name}>: {e}") from None
            except TypeError:
                raise TemplateError(f"template: {NAME}:{line}: wrong number of args for {name}") from None
        if len(cmd.args) > 1 or piped is not _MISSING:
            raise TemplateError(f"template: {NAME}:{line}: can't give argument to non-function "
                                f"{self._describe(first)}")
        return self.operand(first, dot, line)

    @staticmethod
    def _describe(op: Operand) -> str:
        if op.kind == "field":
            return "." + ".".join(op.chain)
        if op.kind == "var":
            return ".".join([op.value, *op.chain])
        return repr(op.value)

    def operand(self, op: Operand, dot: Any, line: int) -> Any:
        if op.kind == "literal":
            return op.value
        if op.kind == "ident":
            return self.command(Command([op]), dot, _MISSING, line)
        if op.kind == "field":
            value = dot
        elif op.kind == "var":
            value = self.var(op.value, line)
        else:
            value = self.pipeline(op.value, dot)
        for name in op.chain:
            try:
                value = lookup(value, name)
            except TemplateError as e:
                raise TemplateError(f"template: {NAME}:{line}: executing \"{NAME}\" at <.{name}>: {e}") from None
        return value


def execute(src: str, data: Any) -> str:
    """Render template ``src`` over ``data``; raises TemplateError."""
    nodes = parse(src)
    ex = _Exec(data)
    ex.run(nodes, data)
    return "".join(ex.out)
