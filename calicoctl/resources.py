"""Which resources a command acts on: documents from ``-f`` files (YAML or
JSON, several documents, ``List`` kinds, directories, ``-`` for stdin) or a
kind and names from the command line.

Every document is validated (with the namespace rules applied) before the
command touches the datastore, so an invalid document means nothing is
written.  Errors name the file, the document and the field at fault.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

from datastore.kinds import KINDS, kind_info
from datastore.models import ResourceError, dump_resource, load_resource, load_yaml_documents

from calicoctl.kinds import resolve_kind

Doc = dict[str, Any]
FILE_SUFFIXES = (".yaml", ".yml", ".json")


class FileInvalid(Exception):
    """A file could not be read or one of its documents is invalid
    (upstream prints these as ``Failed to execute command: ...``)."""


class ArgsError(Exception):
    """The command line names no usable resource."""


@dataclass
class Item:
    """One resource a command acts on.  ``name`` is empty for a list
    (``get KIND``); ``namespace`` is ``None`` for all namespaces or
    cluster-scoped kinds; ``doc`` is the validated document from a file."""

    kind: str
    name: str = ""
    namespace: str | None = None
    doc: Doc | None = None
    revision: str = ""  # metadata.resourceVersion given in the document
    source: str = ""


@dataclass
class NamespaceArgs:
    namespace: str = ""
    all_namespaces: bool = False


# --------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------


def iter_files(path: str, recursive: bool) -> Iterator[str]:
    """``path`` itself, or the .yaml/.yml/.json files of a directory."""
    if path == "-" or not os.path.isdir(path):
        yield path
        return
    if recursive:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(FILE_SUFFIXES):
                    yield os.path.join(root, f)
    else:
        for f in sorted(os.listdir(path)):
            full = os.path.join(path, f)
            if f.endswith(FILE_SUFFIXES) and os.path.isfile(full):
                yield full


def read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise FileInvalid(f"open {path}: no such file or directory") from None
    except IsADirectoryError:
        raise FileInvalid(f"read {path}: is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FileInvalid(f"cannot read {path}: {e}") from None


def load_files(path: str, recursive: bool, skip_empty: bool, ns: NamespaceArgs,
               for_get: bool = False) -> list[Item]:
    """Every document of every file, validated; raises FileInvalid listing
    every invalid document (nothing has been written at that point)."""
    items: list[Item] = []
    problems: list[str] = []
    seen_any = False
    for file in iter_files(path, recursive):
        seen_any = True
        label = "stdin" if file == "-" else file
        text = read_source(file)
        try:
            docs = parse_documents(text)
        except ResourceError as e:
            problems.append(f"{label}: {e}")
            continue
        if not docs:
            if not skip_empty:
                raise FileInvalid(f"No resources specified in file {label}")
            continue
        for index, raw in enumerate(docs, 1):
            where = f"{label}: resource {index}" if len(docs) > 1 else label
            try:
                items.append(validate_document(raw, ns, where, for_get=for_get))
            except (ResourceError, ValueError) as e:
                problems.append(f"{where}: {e}")
    if problems:
        raise FileInvalid("\n".join(problems))
    if not items and seen_any and os.path.isdir(path) and not skip_empty:
        raise FileInvalid(f"No resources specified in directory {path}")
    return items


def parse_documents(text: str) -> list[Doc]:
    """Every document of a file (YAML streams, JSON, List kinds, and YAML
    sequences of resources as ``get -o yaml`` prints them)."""
    return load_yaml_documents(text)


def validate_document(raw: Any, ns: NamespaceArgs, where: str = "", for_get: bool = False) -> Item:
    if not isinstance(raw, dict):
        raise ResourceError(f"a resource must be a mapping, not {type(raw).__name__}")
    kind = raw.get("kind")
    api_version = raw.get("apiVersion")
    if not isinstance(kind, str) or kind not in KINDS or api_version != "projectcalico.org/v3":
        detail = ""
        if isinstance(kind, str) and kind in KINDS:
            detail = ": apiVersion must be projectcalico.org/v3"
        elif not kind:
            detail = ": the document has no kind"
        raise ResourceError(f"Unknown resource type ({kind or ''}) and/or version ({api_version or ''}){detail}")
    raw = dict(raw)
    meta = raw.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ResourceError(f"{kind}: metadata must be a mapping")
    meta = dict(meta)
    raw["metadata"] = meta
    namespace = _namespace_for(kind, meta.get("namespace") or "", ns, for_get)
    if kind_info(kind).namespaced:
        if namespace:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
    try:
        model = load_resource(raw)
    except ResourceError as e:
        raise ResourceError(_massage(str(e)), e.kind, e.name, e.errors) from None
    doc = dump_resource(model)
    if kind_info(kind).namespaced and not namespace:
        # -A on a get: the document names no namespace to look in.
        doc["metadata"].pop("namespace", None)
    revision = str(doc.get("metadata", {}).get("resourceVersion") or "")
    return Item(kind, model.name, doc["metadata"].get("namespace"), doc, revision, where)


def _massage(message: str) -> str:
    """Upstream words unknown fields as 'not recognized or in the wrong location'."""
    return message.replace("Extra inputs are not permitted",
                           "field in document is not recognized or is in the wrong location")


def _namespace_for(kind: str, res_ns: str, ns: NamespaceArgs, for_get: bool) -> str:
    """Upstream's handleNamespace: the namespace a document is acted on in."""
    if kind_info(kind).namespaced:
        if ns.all_namespaces and ns.namespace:
            raise ValueError("cannot use both --namespace and --all-namespaces flags at the same time")
        if ns.all_namespaces and for_get:
            return ""
        if not res_ns:
            return ns.namespace or "default"
        if ns.namespace and res_ns != ns.namespace:
            raise ValueError(f"resource namespace does not match client namespace. {res_ns} != {ns.namespace}")
        return res_ns
    if res_ns:
        raise ValueError(
            f"namespace should not be specified for a non-namespaced resource. {kind} is not a namespaced resource"
        )
    if ns.all_namespaces or ns.namespace:
        raise ValueError(f"{kind} is not namespaced")
    return ""


# --------------------------------------------------------------------------
# Command-line kind and names.
# --------------------------------------------------------------------------


def items_from_args(kind_typed: str, names: list[str], ns: NamespaceArgs, for_get: bool = False) -> list[Item]:
    kind = resolve_kind(kind_typed)
    if any(n == "" for n in names):
        raise ArgsError("resource name may not be empty")
    namespace = _namespace_for(kind, "", ns, for_get) or None
    if not names:
        return [Item(kind, "", namespace)]
    if kind_info(kind).namespaced and namespace is None:
        raise ArgsError("cannot use --all-namespace flag for getting a single resource")
    return [Item(kind, name, namespace) for name in names]
