"""The resource commands: create, apply, replace, delete, get, patch, label,
validate.  Output and exit status follow upstream calicoctl: a summary line on
stdout on success, the error text on stderr and exit status 1 on failure."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from datastore.backend import Backend
from datastore.errors import DatastoreError, NotFound
from datastore.keys import ResourceKey
from datastore.models import ResourceError, dump_resource, load_resource

from calicoctl import actions, printers
from calicoctl.actions import ActionError
from calicoctl.kinds import Lookups, UnknownKind
from calicoctl.patching import PatchError, apply_patch
from calicoctl.resources import ArgsError, FileInvalid, Item, NamespaceArgs, items_from_args, load_files


class CommandError(Exception):
    """Printed to stderr; calicoctl exits 1."""


# --------------------------------------------------------------------------
# Connection.
# --------------------------------------------------------------------------


@dataclass
class Session:
    """Connects lazily, once, from ``--config`` or the environment."""

    config_path: str | None
    _backend: Backend | None = None

    def backend(self) -> Backend:
        if self._backend is None:
            from datastore.config import connect

            from calicoctl.clientconfig import ConfigError, load_config

            try:
                config = load_config(self.config_path)
                self._backend = connect(config)
            except (ConfigError, ValueError, DatastoreError) as e:
                raise CommandError(f"Failed to create Calico API client: {e}") from None
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def session_from(args: argparse.Namespace) -> Session:
    return Session(getattr(args, "config", None))


# --------------------------------------------------------------------------
# Collecting the resources a command acts on.
# --------------------------------------------------------------------------


def _ns_args(args: argparse.Namespace) -> NamespaceArgs:
    return NamespaceArgs(getattr(args, "namespace", None) or "", bool(getattr(args, "all_namespaces", False)))


@dataclass
class Targets:
    items: list[Item]
    single_kind: str  # "" when several kinds are involved
    from_file: bool


def collect(args: argparse.Namespace, for_get: bool = False) -> Targets:
    ns = _ns_args(args)
    filename = getattr(args, "filename", None)
    if filename and getattr(args, "kind", None):
        raise CommandError("Give either a KIND (and names) or --filename, not both")
    try:
        if filename:
            items = load_files(filename, bool(getattr(args, "recursive", False)),
                               bool(getattr(args, "skip_empty", False)), ns, for_get=for_get)
            kinds = {i.kind for i in items}
            return Targets(items, kinds.pop() if len(kinds) == 1 else "", True)
        kind = getattr(args, "kind", None)
        if not kind:
            raise CommandError("No resources specified")
        items = items_from_args(kind, list(getattr(args, "names", None) or []), ns, for_get=for_get)
        return Targets(items, items[0].kind, False)
    except FileInvalid as e:
        raise CommandError(f"Failed to execute command: {e}") from None
    except (ArgsError, UnknownKind) as e:
        raise CommandError(str(e)) from None
    except ValueError as e:  # namespace rules on the command line
        raise CommandError(str(e)) from None


def _errs(errors: Sequence[Exception]) -> str:
    """Go's ``%v`` of a []error."""
    return "[" + " ".join(str(e) for e in errors) + "]"


def _kind_word(kind: str) -> str:
    return f" '{kind}'" if kind else ""


# --------------------------------------------------------------------------
# create / apply / replace.
# --------------------------------------------------------------------------


@dataclass
class WriteVerb:
    name: str  # create | apply | replace
    past: str  # created | applied | replaced
    action: Callable[[Backend, Item], Any]
    hit: str = "Hit error"
    stop_on_error: bool = False


VERBS = {
    "create": WriteVerb("create", "created", actions.create),
    "apply": WriteVerb("apply", "applied", actions.apply, hit="Hit error(s)"),
    "replace": WriteVerb("replace", "replaced", actions.update, stop_on_error=True),
}


def run_write(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    verb = VERBS[args.command]
    targets = collect(args)
    if not targets.items:
        out("No resources specified\n")
        return
    session = session_from(args)
    backend = session.backend()
    actions.ensure_initialized(backend)
    handled = 0
    errors: list[Exception] = []
    for item in targets.items:
        try:
            verb.action(backend, item)
            handled += 1
        except ActionError as e:
            if e.exists and getattr(args, "skip_exists", False):
                handled += 1
                continue
            errors.append(e)
            if verb.stop_on_error:
                break
    session.close()
    total = len(targets.items)
    kind = targets.single_kind
    if handled == 0:
        what = _errs(errors) if not verb.stop_on_error else str(errors[0])
        if total == 1:
            raise CommandError(f"Failed to {verb.name} '{kind}' resource: {what}")
        if kind:
            raise CommandError(f"Failed to {verb.name} any '{kind}' resources: {what}")
        raise CommandError(f"Failed to {verb.name} any resources: {what}")
    if not errors:
        out(f"Successfully {verb.past} {handled}{_kind_word(kind)} resource(s)\n")
        return
    out(f"Partial success: {verb.past} the first {handled} out of {total}{_kind_word(kind)} resources:\n")
    what = _errs(errors) if not verb.stop_on_error else str(errors[0])
    raise CommandError(f"{verb.hit}: {what}")


# --------------------------------------------------------------------------
# delete / get.
# --------------------------------------------------------------------------


def run_delete(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    targets = collect(args)
    if not targets.items:
        out("No resources specified\n")
        return
    if any(not i.name for i in targets.items):
        raise CommandError("No resources specified")
    session = session_from(args)
    backend = session.backend()
    handled = 0
    errors: list[Exception] = []
    for item in targets.items:
        try:
            actions.delete(backend, item)
            handled += 1
        except ActionError as e:
            if e.not_found and getattr(args, "skip_not_exists", False):
                handled += 1
                continue
            errors.append(e)
    session.close()
    kind = targets.single_kind
    if handled:
        out(f"Successfully deleted {handled}{_kind_word(kind)} resource(s)\n")
    if errors:
        prefix = f"Failed to delete '{kind}' resource: " if kind else "Failed to delete resource: "
        raise CommandError("".join(f"{prefix}{e}\n" for e in errors).rstrip("\n"))


def _lookups(backend: Backend) -> Lookups:
    def as_number() -> str:
        try:
            value = backend.get(ResourceKey("BGPConfiguration", "default")).value
        except NotFound:
            return "64512"
        except DatastoreError:
            return "unknown"
        asn = (value.get("spec") or {}).get("asNumber")
        return str(asn) if asn else "64512"

    return Lookups(as_number)


def _for_output(doc: dict[str, Any], export: bool) -> dict[str, Any]:
    """The stored document in the models' field order (JSON prints in struct
    order); with --export, cluster-specific metadata removed."""
    try:
        model = load_resource(doc)
        shaped = dump_resource(model)
        # Keep exactly what is stored: the model only contributes ordering.
        doc = _reorder(doc, shaped)
    except ResourceError:
        pass
    if export:
        meta = dict(doc.get("metadata") or {})
        for k in ("namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        doc = {**doc, "metadata": meta}
    return doc


def _reorder(value: Any, template: Any) -> Any:
    if isinstance(value, dict) and isinstance(template, dict):
        out = {k: _reorder(value[k], template[k]) for k in template if k in value}
        out.update({k: v for k, v in value.items() if k not in out})
        return out
    if isinstance(value, list) and isinstance(template, list) and len(value) == len(template):
        return [_reorder(v, t) for v, t in zip(value, template)]
    return value


def run_get(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    try:
        fmt = printers.parse_output(args.output)
    except printers.OutputError as e:
        raise CommandError(str(e)) from None
    targets = collect(args, for_get=True)
    session = session_from(args)
    backend = session.backend()
    results: list[printers.Result] = []
    errors: list[Exception] = []
    export = bool(getattr(args, "export", False))
    for item in targets.items:
        try:
            result = actions.get_or_list(backend, item)
        except ActionError as e:
            errors.append(e)
            continue
        if isinstance(result, printers.ResourceList):
            result.items = [_for_output(d, False) for d in result.items]
            results.append(result)
        else:
            results.append(_for_output(result, export))
    print_ns = bool(getattr(args, "all_namespaces", False) or getattr(args, "namespace", None))
    try:
        out(printers.render(fmt, results, print_namespace=print_ns, lookups=_lookups(backend)))
    except printers.OutputError as e:
        raise CommandError(str(e)) from None
    finally:
        session.close()
    if errors:
        raise CommandError("\n".join(str(e) for e in errors))


def run_validate(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    targets = collect(args)
    if not targets.items:
        out("No resources specified\n")
        return
    out(f"Successfully validated {len(targets.items)}{_kind_word(targets.single_kind)} resource(s)\n")


# --------------------------------------------------------------------------
# patch / label.
# --------------------------------------------------------------------------


def _patched_document(current: dict[str, Any], patch_text: str, patch_type: str, item: Item) -> dict[str, Any]:
    try:
        patch = json.loads(patch_text)
    except json.JSONDecodeError as e:
        raise ActionError(f"invalid patch: {e}") from None
    try:
        patched = apply_patch(current, patch, patch_type)
    except PatchError as e:
        raise ActionError(f"performing {patch_type} patch: {e}") from None
    meta = patched.get("metadata") if isinstance(patched, dict) else None
    if not isinstance(meta, dict) or meta.get("name") != item.name or meta.get("namespace") != item.namespace \
            or patched.get("kind") != item.kind:
        raise ActionError("a patch may not change the kind, name or namespace of a resource")
    try:
        model = load_resource(patched)
    except ResourceError as e:
        raise ActionError(f"creating resource from patched data: {e}") from None
    doc = dump_resource(model)
    return doc


def run_patch(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    targets = collect(args)
    item = targets.items[0]
    if not item.name:
        raise CommandError("resource name may not be empty")
    session = session_from(args)
    backend = session.backend()
    try:
        actions._check_supported(item, "apply or replace")
        try:
            current = backend.get(actions.key_of(item))
        except DatastoreError as e:
            raise actions._datastore_error(item, e) from None
        doc = _patched_document(current.value, args.patch, args.type, item)
        try:
            actions.replace_raw(backend, item, doc, current.revision)
        except ActionError as e:
            raise ActionError(f"updating existing resource: {e}") from None
    except ActionError as e:
        raise CommandError(f"Hit error: {e}") from None
    finally:
        session.close()
    out(f"Successfully patched 1 '{item.kind}' resource\n")


def run_label(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    kind_typed, name = args.kind, args.names[0]
    remove = bool(args.remove)
    if remove:
        key, value = args.label, ""
    else:
        parts = args.label.split("=")
        if len(parts) != 2:
            raise CommandError(f"invalid label {args.label}")
        key, value = parts
    if remove and args.overwrite:
        raise CommandError("--overwrite and --remove cannot be used together")
    targets = collect(args)
    item = targets.items[0]
    session = session_from(args)
    backend = session.backend()
    try:
        try:
            current = backend.get(actions.key_of(item))
        except NotFound:
            raise CommandError(f"{kind_typed} {name} not found") from None
        except DatastoreError as e:
            raise CommandError(f"failed to get {kind_typed} {name}, error {e}") from None
        doc = json.loads(json.dumps(current.value))
        labels = dict(doc.get("metadata", {}).get("labels") or {})
        overwritten = False
        if remove:
            if key not in labels:
                raise CommandError(f"cannot remove label of {kind_typed} {name}, key {key} does not exist")
            del labels[key]
        elif key in labels:
            if not args.overwrite and labels[key] != value:
                raise CommandError(
                    f"failed to update label of {kind_typed} {name}, key {key} is already present. "
                    "please use '--overwrite' to set a new value."
                )
            labels[key] = value
            overwritten = True
        else:
            labels[key] = value
        doc["metadata"]["labels"] = labels
        if not labels:
            doc["metadata"].pop("labels")
        try:
            actions._check_supported(item, "apply or replace")
            model = load_resource(doc)
            actions.replace_raw(backend, item, dump_resource(model), current.revision)
        except ResourceError as e:
            raise CommandError(f"failed to update {kind_typed} {name}, label not changed: {e}") from None
        except ActionError:
            raise CommandError(f"failed to update {kind_typed} {name}, label not changed") from None
    finally:
        session.close()
    if remove:
        out(f"Successfully removed label {key} from {kind_typed} {name}\n")
    elif overwritten:
        out(f"Successfully updated label {key} on {kind_typed} {name}\n")
    else:
        out(f"Successfully set label {key} on {kind_typed} {name}\n")


RUNNERS: dict[str, Callable[[argparse.Namespace, Callable[[str], None]], None]] = {
    "create": run_write,
    "apply": run_write,
    "replace": run_write,
    "delete": run_delete,
    "get": run_get,
    "patch": run_patch,
    "label": run_label,
    "validate": run_validate,
}
