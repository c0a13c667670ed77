"""Output formats of ``calicoctl get``: ps / wide tables, custom columns, YAML,
JSON and names.

What is printed is a list of *results*: each either one resource (a dict) or
a :class:`ResourceList` (a ``get KIND`` without names).  As upstream, one
result prints as itself and several as a YAML/JSON sequence; tables print
one table per result, each followed by an empty line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, Union

from datastore.kinds import API_VERSION
from calicoctl.kinds import TABLES, Lookups

Doc = dict[str, Any]


@dataclass
class ResourceList:
    kind: str
    items: list[Doc] = field(default_factory=list)
    revision: str = ""

    def to_dict(self) -> Doc:
        return {
            "apiVersion": API_VERSION,
            "kind": f"{self.kind}List",
            "metadata": {"resourceVersion": self.revision},
            "items": self.items,
        }


Result = Union[Doc, ResourceList]


class OutputError(ValueError):
    pass


# --------------------------------------------------------------------------
# Tables (Go text/tabwriter with minwidth 5, padding 3, as upstream).
# --------------------------------------------------------------------------

MIN_WIDTH = 5
PADDING = 3


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Every cell tab-terminated, so every column (the last too) is padded."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [MIN_WIDTH] * ncols
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell) + PADDING)
    return "".join(
        "".join(cell + " " * (widths[i] - len(cell)) for i, cell in enumerate(r)) + "\n" for r in rows
    )


def _kind_of(result: Result) -> str:
    return result.kind if isinstance(result, ResourceList) else str(result.get("kind", ""))


def _items(result: Result) -> list[Doc]:
    return result.items if isinstance(result, ResourceList) else [result]


def render_table(results: Iterable[Result], *, wide: bool = False, headings: Sequence[str] | None = None,
                 print_namespace: bool = False, lookups: Lookups | None = None) -> str:
    lookups = lookups or Lookups()
    out = []
    for result in results:
        table = TABLES[_kind_of(result)]
        cols = list(headings) if headings is not None else list(table.wide if wide else table.headings)
        if print_namespace and "NAMESPACE" in table.columns:
            cols.insert(0, "NAMESPACE")
        for c in cols:
            if c not in table.columns:
                valid = ", ".join(sorted(table.columns))
                raise OutputError(f"Unknown heading {c}, valid values are: {valid}")
        rows = [cols] + [[table.columns[c](item, lookups) for c in cols] for item in _items(result)]
        out.append(tabwrite(rows) + "\n")
    return "".join(out)


# --------------------------------------------------------------------------
# YAML (keys sorted, as upstream's JSON-then-YAML conversion) and JSON.
# --------------------------------------------------------------------------

_dumper: Any = None


def _yaml_dumper() -> Any:
    """A safe dumper that quotes with double quotes (as Go's YAML does) and
    never folds long strings."""
    global _dumper
    if _dumper is None:
        import yaml

        # The pure-Python emitter (the C one cannot be steered).
        class Dumper(yaml.SafeDumper):
            def choose_scalar_style(self) -> Any:
                style = super().choose_scalar_style()
                return '"' if style == "'" else style

        _dumper = Dumper
    return _dumper


def _plain(result: Result) -> Any:
    return result.to_dict() if isinstance(result, ResourceList) else result


def render_yaml(results: Sequence[Result]) -> str:
    import yaml

    data: Any = _plain(results[0]) if len(results) == 1 else [_plain(r) for r in results]
    return yaml.dump(data, Dumper=_yaml_dumper(), default_flow_style=False, sort_keys=True,
                     allow_unicode=True, width=1 << 30)


_META_ORDER = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
)


def _go_order(doc: Doc) -> Doc:
    """A resource in Go struct order: kind, apiVersion, metadata, spec, status."""
    out: Doc = {}
    for key in ("kind", "apiVersion"):
        if key in doc:
            out[key] = doc[key]
    meta = doc.get("metadata")
    if isinstance(meta, dict):
        ordered = {k: meta[k] for k in _META_ORDER if k in meta}
        ordered.update({k: v for k, v in meta.items() if k not in ordered})
        out["metadata"] = ordered
    for key, value in doc.items():
        if key not in out:
            out[key] = value
    return out


def _json_value(result: Result) -> Any:
    if isinstance(result, ResourceList):
        return {
            "kind": f"{result.kind}List",
            "apiVersion": API_VERSION,
            "metadata": {"resourceVersion": result.revision},
            "items": [_go_order(i) for i in result.items],
        }
    return _go_order(result)


def go_json(value: Any) -> str:
    """``json.MarshalIndent(v, "", "  ")``: HTML-sensitive characters escaped."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def render_json(results: Sequence[Result]) -> str:
    data: Any = _json_value(results[0]) if len(results) == 1 else [_json_value(r) for r in results]
    return go_json(data) + "\n"


def render_names(results: Iterable[Result]) -> str:
    lines = []
    for result in results:
        for item in _items(result):
            kind = str(item.get("kind", _kind_of(result))).lower()
            lines.append(f"{kind}.projectcalico.org/{item.get('metadata', {}).get('name', '')}\n")
    return "".join(lines)


# --------------------------------------------------------------------------


@dataclass
class OutputFormat:
    kind: str  # ps | wide | custom-columns | yaml | json | name | go-template
    columns: list[str] | None = None
    template: str = ""


def parse_output(spec: str) -> OutputFormat:
    if spec in ("yaml", "yml"):
        return OutputFormat("yaml")
    if spec in ("json", "ps", "wide", "name"):
        return OutputFormat(spec)
    key, eq, value = spec.partition("=")
    if key == "custom-columns":
        if not value:
            raise OutputError("need to specify at least one column")
        return OutputFormat("custom-columns", [c.strip() for c in value.split(",")])
    if key in ("go-template", "go-template-file"):
        from calicoctl import gotemplate

        text = value
        if key == "go-template-file":
            try:
                with open(value, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                raise OutputError(f"open {value}: no such file or directory") from None
            except (OSError, UnicodeDecodeError) as e:
                raise OutputError(f"cannot read {value}: {e}") from None
        try:
            gotemplate.parse(text)  # refuse a bad template before touching the datastore
        except gotemplate.TemplateError as e:
            raise OutputError(str(e)) from None
        return OutputFormat("go-template", template=text)
    raise OutputError(f"unrecognized output format '{spec}'")


def render(fmt: OutputFormat, results: Sequence[Result], *, print_namespace: bool = False,
           lookups: Lookups | None = None) -> str:
    if fmt.kind == "yaml":
        return render_yaml(results) if results else ""
    if fmt.kind == "json":
        return render_json(results) if results else ""
    if fmt.kind == "name":
        return render_names(results)
    if fmt.kind == "go-template":
        from calicoctl import gotemplate

        try:
            return gotemplate.execute(fmt.template, [_plain(r) for r in results])
        except gotemplate.TemplateError as e:
            raise OutputError(str(e)) from None
    if fmt.kind == "custom-columns":
        return render_table(results, headings=fmt.columns, lookups=lookups)
    return render_table(results, wide=fmt.kind == "wide", print_namespace=print_namespace, lookups=lookups)
