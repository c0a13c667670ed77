"""Pydantic v2 models of the projectcalico.org/v3 resources and the IPAM values.

Importing this package is cheap: it imports neither pydantic nor any model
module.  Models load on first use, per module, e.g.::

    from datastore.models.ippool import IPPool        # only ippool + common
    from datastore.models import load_resource        # picks the model by kind
    from datastore.models import IPPool               # lazy attribute, same class

Public helpers:

* :func:`load_resource` -- a dict (one document) -> validated resource model;
  raises :class:`ResourceError` naming the kind, the resource and the field.
* :func:`dump_resource` -- a model -> Calico JSON dict (camelCase, unset
  fields omitted).
* :func:`load_yaml_documents` -- YAML (multi-document) or JSON text -> list of
  dicts, with ``kind: List`` / ``<Kind>List`` documents expanded into items.
"""
from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

from datastore.kinds import API_VERSION, KINDS, kind_info

if TYPE_CHECKING:  # pragma: no cover
    from datastore.models.common import Resource

__all__ = ["ResourceError", "load_resource", "dump_resource", "load_yaml_documents"]


class ResourceError(ValueError):
    """A document is not a valid Calico resource.

    ``kind`` and ``name`` identify the document (when known); ``errors`` is a
    list of ``(field path, message)`` pairs, the path in Calico's JSON names
    (e.g. ``spec.blockSize``).
    """

    def __init__(self, message: str, kind: str = "", name: str = "", errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.errors = errors or []


# Lazily resolved attributes: class name -> module (under datastore.models).
_LAZY: dict[str, str] = {k.model.partition(":")[2]: k.model.partition(":")[0] for k in KINDS.values()}
_LAZY.update(
    {
        name: "datastore.models." + module
        for module, names in {
            "common": ("ObjectMeta", "Resource", "CalicoModel"),
            "policy": (
                "Rule",
                "EntityRule",
                "ICMPFields",
                "HTTPMatch",
                "ServiceMatch",
                "ServiceAccountMatch",
                "NetworkPolicySpec",
                "GlobalNetworkPolicySpec",
                "ProfileSpec",
                "TierSpec",
                "NetworkSetSpec",
                "GlobalNetworkSetSpec",
            ),
            "ippool": ("IPPoolSpec",),
            "ipam": (
                "IPAMConfigurationSpec",
                "AllocationBlock",
                "AllocationAttribute",
                "BlockAffinity",
                "IPAMHandle",
                "IPAMConfigValue",
            ),
            "node": ("NodeSpec", "NodeBGPSpec", "NodeStatus"),
            "endpoint": ("WorkloadEndpointSpec", "HostEndpointSpec", "WorkloadEndpointPort", "EndpointPort", "IPNAT"),
            "bgp": ("BGPConfigurationSpec", "BGPPeerSpec"),
            "felix": ("FelixConfigurationSpec",),
            "cluster": ("ClusterInformationSpec",),
        }.items()
        for name in names
    }
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load_resource(doc: Any) -> "Resource":
    """Validate one document and return its model (chosen by ``kind``)."""
    if not isinstance(doc, dict):
        raise ResourceError(f"a resource must be a mapping, not {type(doc).__name__}")
    kind = doc.get("kind")
    if not kind or not isinstance(kind, str):
        raise ResourceError("resource has no 'kind'")
    if kind not in KINDS:
        hint = ""
        try:
            hint = f" (did you mean {kind_info(kind).name!r}?)"
        except KeyError:
            pass
        raise ResourceError(f"unknown resource kind {kind!r}{hint}", kind=kind)
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    label = f"{kind} {name!r}" if isinstance(name, str) and name else kind
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        what = "missing" if api_version is None else f"{api_version!r}"
        raise ResourceError(
            f"{label}: apiVersion must be {API_VERSION!r} (got {what})",
            kind=kind,
            name=name or "",
            errors=[("apiVersion", "wrong apiVersion")],
        )
    if not isinstance(name, str) or not name:
        raise ResourceError(
            f"{kind}: metadata.name is required", kind=kind, errors=[("metadata.name", "field required")]
        )

    from pydantic import ValidationError

    from datastore.models.common import error_path

    module, _, cls_name = KINDS[kind].model.partition(":")
    model = getattr(importlib.import_module(module), cls_name)
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        errors = []
        for err in e.errors(include_url=False):
            msg = str(err.get("msg", ""))
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            errors.append((error_path(model, tuple(err.get("loc", ()))), msg))
        detail = "; ".join(f"{loc}: {msg}" for loc, msg in errors)
        raise ResourceError(f"invalid {label}: {detail}", kind=kind, name=name, errors=errors) from None


def dump_resource(res: Any) -> dict[str, Any]:
    """A resource (or IPAM value) as Calico JSON: camelCase names, unset fields omitted."""
    to_dict = getattr(res, "to_dict", None)
    if to_dict is not None:  # IPAM values keep upstream's explicit nulls.
        return to_dict()  # type: ignore[no-any-return]
    return res.model_dump(mode="json", by_alias=True, exclude_none=True)  # type: ignore[no-any-return]


_yaml_loader: Any = None


def _loader() -> Any:
    """A safe YAML loader that leaves timestamps as strings (as Kubernetes tools do)."""
    global _yaml_loader
    if _yaml_loader is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        loader = type("_CalicoLoader", (base,), {})
        loader.yaml_implicit_resolvers = {
            ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for ch, resolvers in base.yaml_implicit_resolvers.items()
        }
        _yaml_loader = loader
    return _yaml_loader


def _expand(doc: Any, index: int, out: list[dict[str, Any]]) -> None:
    if not isinstance(doc, dict):
        raise ResourceError(f"document {index}: a resource must be a mapping, not {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        item_kind = kind[: -len("List")]
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ResourceError(f"document {index}: {kind} items must be a list")
        for item in items:
            if isinstance(item, dict) and item_kind:
                item = dict(item)
                item.setdefault("kind", item_kind)
                if doc.get("apiVersion") is not None:
                    item.setdefault("apiVersion", doc["apiVersion"])
            _expand(item, index, out)
        return
    out.append(doc)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    """Parse YAML (one or more ``---`` documents) or JSON (an object or an array).

    A YAML document may itself be a sequence of resources (what ``calicoctl
    get -o yaml`` prints for several results); its items are flattened in."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as e:  # undecodable input bytes (stdin decodes with surrogateescape)
            raise ResourceError(f"cannot parse YAML: not valid UTF-8 at character {e.start}") from None
    stripped = text.lstrip()
    docs: list[Any] | None = None
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
            docs = data if isinstance(data, list) else [data]
        except json.JSONDecodeError:
            docs = None  # maybe YAML flow style; let the YAML parser report errors
    if docs is None:
        import yaml

        try:
            docs = []
            for d in yaml.load_all(text, Loader=_loader()):
                if isinstance(d, list):
                    docs.extend(d)
                elif d is not None:
                    docs.append(d)
        except yaml.YAMLError as e:
            raise ResourceError(f"cannot parse YAML: {e}") from None
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs):
        _expand(doc, i, out)
    return out
