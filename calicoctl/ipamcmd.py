"""``calicoctl ipam show | check | release | configure`` (``split``: :mod:`calicoctl.ipamsplit`).

``check`` runs the consistency checker of :mod:`ipam.checker` and prints
upstream's report, then exits 1 when it found problems; ``-o FILE`` writes
upstream's machine-readable report, which ``release --from-report`` consumes
(releasing only addresses that are still allocated with the same handle and
sequence number, and handles whose revision has not changed).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from datastore.backend import Backend
from datastore.errors import Conflict, DatastoreError, NotFound
from datastore.keys import HandleKey, ListOptions, ResourceKey

from calicoctl import boxtable
from calicoctl.commands import CommandError, Session, session_from
from calicoctl.version import client_version

Out = Callable[[str], None]


def run(args: argparse.Namespace, out: Out) -> None:
    session = session_from(args)
    try:
        handler = {
            "show": _show,
            "check": _check,
            "release": _release,
            "configure": _configure,
            "split": _split,
        }[args.ipam_command]
        handler(args, session, out)
    except DatastoreError as e:
        raise CommandError(f"error: {e}") from None
    finally:
        session.close()


def _split(args: argparse.Namespace, session: Session, out: Out) -> None:
    from calicoctl import ipamsplit

    ipamsplit.run(args, session, out)


def _parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise CommandError(f"Invalid IP address specified: {text}") from None


# --------------------------------------------------------------------------
# show
# --------------------------------------------------------------------------


@dataclass
class Usage:
    cidr: str
    capacity: int
    in_use: int = 0

    @property
    def free(self) -> int:
        return self.capacity - self.in_use


@dataclass
class PoolUsage(Usage):
    real: bool = True  # False: the group of blocks in no pool
    blocks: list[Usage] = field(default_factory=list)


def _blocks(backend: Backend) -> list[Any]:
    from datastore.models.ipam import AllocationBlock
    from pydantic import ValidationError

    from ipam.store import Store

    out = []
    for _, value, _ in Store(backend).list_block_dicts():
        try:
            out.append(AllocationBlock.from_dict(value))
        except ValidationError:
            continue
    return out


def utilisation(backend: Backend) -> list[PoolUsage]:
    """Per pool (in datastore order) and per block, as upstream GetUtilization."""
    pools = []
    for kv in backend.list(ListOptions(kind="IPPool")).items:
        cidr = (kv.value.get("spec") or {}).get("cidr")
        if cidr:
            net = ipaddress.ip_network(cidr, strict=False)
            pools.append((net, PoolUsage(str(net), net.num_addresses)))
    orphans = PoolUsage("", 0, real=False)
    for block in _blocks(backend):
        net = block.network
        use = Usage(block.cidr, net.num_addresses, block.in_use())
        for pool_net, usage in pools:
            if pool_net.version == net.version and net.subnet_of(pool_net):  # type: ignore[arg-type]
                usage.in_use += use.in_use
                usage.blocks.append(use)
                break
        else:
            orphans.blocks.append(use)
    result = [usage for _, usage in pools]
    if orphans.blocks:
        result.append(orphans)
    return result


def _g5(n: int) -> str:
    return "%.5g" % float(n)


def _pct(n: int, capacity: int) -> str:
    return f"{_g5(n)} ({100 * n / capacity:.0f}%)" if capacity else f"{_g5(n)} (0%)"


def show_utilisation(backend: Backend, show_blocks: bool) -> str:
    rows = []

    def row(kind: str, u: Usage) -> list[str]:
        return [kind, u.cidr, _g5(u.capacity), _pct(u.in_use, u.capacity), _pct(u.free, u.capacity)]

    for pool in utilisation(backend):
        if pool.real:
            rows.append(row("IP Pool", pool))
        if show_blocks:
            rows.extend(row("Block", b) for b in pool.blocks)
    return boxtable.render(["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"], rows, right=(2,))


def show_ip(backend: Backend, ip: str) -> str:
    address = ipaddress.ip_address(ip)
    for block in _blocks(backend):
        if address.version != block.network.version or address not in block.network:
            continue
        ordinal = block.ip_to_ordinal(ip)
        index = block.allocations[ordinal]
        if index is None:
            break
        lines = [f"IP {ip} is in use"]
        attr = block.attributes[index] if index < len(block.attributes) else None
        handle = attr.handle_id if attr else None
        lines.append(f"Handle ID: {handle}" if handle else "Handle ID: <none>")
        active = (attr.secondary if attr else None) or {}
        if active:
            lines.append("Active Owner Attributes:")
            lines += [f"  {k}: {active[k]}" for k in sorted(active)]
        else:
            lines.append("No Active Owner attributes defined")
        alternate = (attr.alternate if attr else None) or {}
        if alternate:
            lines.append("Alternate Owner Attributes:")
            lines += [f"  {k}: {alternate[k]}" for k in sorted(alternate)]
        return "\n".join(lines) + "\n"
    return f"{ip} is not assigned\n"


def show_borrowed(backend: Backend) -> str:
    rows = []
    unclassified = 0
    for block in _blocks(backend):
        owner = block.affinity.partition(":")[2] if block.affinity and ":" in block.affinity else (block.affinity or "")
        for ordinal, index in enumerate(block.allocations):
            if index is None:
                continue
            attr = block.attributes[index] if index < len(block.attributes) else None
            attrs = (attr.secondary if attr else None) or {}
            node = attrs.get("node")
            if node is None:
                unclassified += 1
                continue
            if node == owner:
                continue
            kind, to = "", ""
            if "pod" in attrs:
                kind, to = "pod", f"{attrs.get('namespace', '')}/{attrs['pod']}"
            elif "type" in attrs:
                kind = attrs["type"]
            rows.append([str(block.ordinal_to_ip(ordinal)), node, block.cidr, owner, kind, to])
    text = boxtable.render(["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"], rows)
    if unclassified:
        text += (f"\nNote: found {unclassified} IP allocations without an explicit node association. "
                 "Unable to determine if they are borrowed.\n")
    return text


def show_configuration(backend: Backend) -> str:
    from ipam.config import load_settings

    s = load_settings(backend)
    rows = [
        ["StrictAffinity", "true" if s.strict_affinity else "false"],
        ["AutoAllocateBlocks", "true" if s.auto_allocate_blocks else "false"],
        ["MaxBlocksPerHost", str(s.max_blocks_per_host)],
    ]
    return boxtable.render(["PROPERTY", "VALUE"], rows)


def _show(args: argparse.Namespace, session: Session, out: Out) -> None:
    backend = session.backend()
    if args.ip:
        out(show_ip(backend, _parse_ip(args.ip)))
    elif args.show_borrowed:
        out(show_borrowed(backend))
    elif args.show_configuration:
        out(show_configuration(backend))
    else:
        out(show_utilisation(backend, args.show_blocks))


# --------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------


@dataclass
class ClusterMeta:
    guid: str = ""
    revision: str = ""
    cluster_type: str = ""
    locked: bool = False


def cluster_meta(backend: Backend) -> ClusterMeta:
    try:
        kv = backend.get(ResourceKey("ClusterInformation", "default"))
    except NotFound:
        return ClusterMeta()
    spec = kv.value.get("spec") or {}
    return ClusterMeta(spec.get("clusterGUID") or "", kv.revision, spec.get("clusterType") or "",
                       spec.get("datastoreReady") is False)


def _attr_string(handle: str | None, attrs: dict[str, str]) -> str:
    extra = ",".join(f"{k}={attrs[k]}" for k in sorted(attrs))
    return f"Main:{handle or '<none>'} Extra:{extra}"


def build_report(backend: Backend, report: Any, meta: ClusterMeta) -> dict[str, Any]:
    """Upstream's report JSON (version, cluster metadata, allocations by IP,
    leaked handles), plus the problems our checker finds beyond upstream's."""
    blocks = {b.cidr: b for b in _blocks(backend)}
    allocations: dict[str, list[dict[str, Any]]] = {}
    for ip, allocs in report.allocations.items():
        entries = []
        for a in allocs:
            block = blocks.get(a.block)
            entry: dict[str, Any] = {"ip": ip}
            if a.handle_id:
                entry["handle"] = a.handle_id
            if block is not None:
                seq = block.sequence_number_for_allocation.get(str(block.ip_to_ordinal(ip)))
                if seq is not None:
                    entry["sequenceNumber"] = seq
            for key, attr in (("pod", "pod"), ("namespace", "namespace"), ("node", "node"),
                              ("type", "type"), ("creationTimestamp", "timestamp")):
                if a.attrs.get(attr):
                    entry[key] = a.attrs[attr]
            if not entry.get("node") and block is not None and block.host:
                entry["node"] = block.host
            entry["inUse"] = bool(a.in_use_by)
            if block is not None and entry.get("node") != block.host:
                entry["borrowed"] = True
            entry["owners"] = list(a.in_use_by) or None
            entries.append(entry)
        allocations[ip] = entries
    out: dict[str, Any] = {
        "version": client_version(),
        "clusterGUID": meta.guid,
        "datastoreLocked": meta.locked,
        "clusterInformationRevision": meta.revision,
        "clusterType": meta.cluster_type,
        "allocations": allocations,
    }
    leaked = [{"ID": h.handle_id, "UID": None, "Revision": h.revision} for h in report.leaked_handles]
    if leaked:
        out["leakedHandles"] = leaked
    out["problems"] = {
        "total": report.problems,
        "details": report.details(),
    }
    return out


def _check(args: argparse.Namespace, session: Session, out: Out) -> None:
    from ipam.checker import check

    backend = session.backend()
    show_all = bool(args.show_all_ips)
    show_problems = show_all or bool(args.show_problem_ips)
    out("Checking IPAM for inconsistencies...\n\n")
    meta = cluster_meta(backend)
    report = check(backend)
    blocks = _blocks(backend)

    out("Loading all IPAM blocks...\n")
    out(f"Found {report.blocks} IPAM blocks.\n")
    for block in blocks:
        out(f" IPAM block {block.cidr} affinity={block.affinity or '<none>'}:\n")
        if show_all:
            for ordinal, index in enumerate(block.allocations):
                if index is None:
                    continue
                attr = block.attributes[index] if index < len(block.attributes) else None
                out(f"  {block.ordinal_to_ip(ordinal)} allocated; attrs "
                    f"{_attr_string(attr.handle_id if attr else None, (attr.secondary if attr else None) or {})}\n")
    out(f"IPAM blocks record {report.allocation_count} allocations.\n\n")

    out("Loading all IPAM pools...\n")
    active = 0
    for kv in backend.list(ListOptions(kind="IPPool")).items:
        spec = kv.value.get("spec") or {}
        if spec.get("disabled"):
            continue
        active += 1
        out(f"  {spec.get('cidr')}\n")
    out(f"Found {active} active IP pools.\n\n")

    node_ips = {ip: o for ip, o in report.in_use.items() if any(x.startswith("Node(") for x in o)}
    wep_ips = {ip: o for ip, o in report.in_use.items() if any(x.startswith("Workload(") for x in o)}
    out("Loading all nodes.\n")
    if show_all:
        for ip, owners in node_ips.items():
            out("".join(f"  {ip} belongs to {o}\n" for o in owners if o.startswith("Node(")))
    out(f"Found {sum(len([o for o in v if o.startswith('Node(')]) for v in node_ips.values())} node tunnel IPs.\n\n")
    out("Loading all workload endpoints.\n")
    if show_all:
        for ip, owners in wep_ips.items():
            out("".join(f"  {ip} belongs to {o}\n" for o in owners if o.startswith("Workload(")))
    out(f"Found {sum(len([o for o in v if o.startswith('Workload(')]) for v in wep_ips.values())} workload IPs.\n")
    out(f"Workloads and nodes are using {len(report.in_use)} IPs.\n\n")

    by_node: dict[str, int] = {}
    for allocs in report.allocations.values():
        for a in allocs:
            block = next((b for b in blocks if b.cidr == a.block), None)
            node = a.node or (block.host if block is not None else "") or ""
            by_node[node] = by_node.get(node, 0) + 1
    out("Looking for top (up to 20) nodes by allocations...\n")
    ranked = sorted(by_node, key=lambda n: -by_node[n])
    for n in ranked[:20]:
        out(f"  {n} has {by_node[n]} allocations\n")
    if ranked:
        out(f"Node with most allocations has {by_node[ranked[0]]}; median is {by_node[ranked[len(ranked) // 2]]}\n")
    out("\n")

    out("Scanning for IPs that are allocated but not actually in use...\n")
    if show_problems:
        for a in report.leaked_ips:
            out(f"  {a.ip} leaked; attrs {_attr_string(a.handle_id, a.attrs)}\n")
    out(f"Found {len(report.leaked_ips)} IPs that are allocated in IPAM but not actually in use.\n")
    out("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...\n")
    if show_problems:
        for ip, owners in report.in_use.items():
            if len(owners) > 1:
                out(f"  {ip} has multiple owners.\n")
        for ip, owners in report.in_use_outside_pools.items():
            out("".join(f"  {ip} in use by {o} is not in any active IP pool.\n" for o in owners))
        for ip, owners in report.in_use_not_allocated.items():
            out("".join(f"  {ip} in use by {o} and in active IPAM pool but has no IPAM allocation.\n" for o in owners))
    out(f"Found {len(report.in_use_outside_pools)} in-use IPs that are not in active IP pools.\n")
    out(f"Found {len(report.in_use_not_allocated)} in-use IPs that are in active IP pools but have no "
        "corresponding IPAM allocation.\n\n")

    out("Scanning for IPAM handles with no matching IPs...\n")
    if show_all:
        for h in report.leaked_handles:
            out(f"  {h.handle_id} doesn't have any active IPs.\n")
    good = report.handles - len(report.leaked_handles)
    out(f"Found {len(report.leaked_handles)} handles with no matching IPs (and {good} handles with matches).\n")
    out("Scanning for IPs with missing handle...\n")
    if show_problems:
        for h in report.missing_handles:
            out(f"  {h} is in use in a block but doesn't exist.\n")
    out(f"Found {len(report.missing_handles)} handles mentioned in blocks with no matching handle resource.\n")

    # Beyond upstream: what the checker also verifies.
    out("Scanning for other inconsistencies (duplicate allocations, handle counts, malformed or orphaned "
        "blocks, stale affinities)...\n")
    if show_problems:
        for ip, cidrs in report.duplicate_ips.items():
            out(f"  {ip} is allocated {len(cidrs)} times (blocks {', '.join(cidrs)}).\n")
        for m in report.refcount_mismatches:
            out(f"  handle {m.handle_id} counts {m.handle_count} in {m.block}; the block holds {m.block_count}.\n")
        for cidr, problems in report.corrupt_blocks.items():
            out(f"  block {cidr} is malformed: {'; '.join(problems)}.\n")
        for cidr in report.orphan_blocks:
            out(f"  block {cidr} is in no IP pool.\n")
        for s in report.stale_affinities:
            out(f"  affinity of {s.node} for {s.block} ({s.state}): {s.reason}.\n")
    others = (len(report.duplicate_ips) + len(report.refcount_mismatches) + len(report.corrupt_blocks)
              + len(report.orphan_blocks) + len(report.stale_affinities))
    out(f"Found {others} other inconsistencies.\n")
    out(f"Check complete; found {report.problems} problems.\n")

    if args.output:
        data = build_report(backend, report, meta)
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
        except OSError as e:
            raise CommandError(f"cannot write the report to {args.output}: {e.strerror}") from None
    if report.problems:
        raise CommandError(f"IPAM check found {report.problems} problems")


# --------------------------------------------------------------------------
# release
# --------------------------------------------------------------------------


def _release(args: argparse.Namespace, session: Session, out: Out) -> None:
    from ipam.release import release_ips
    from ipam.store import Store

    backend = session.backend()
    if args.from_report:
        release_from_reports(backend, args.from_report, bool(args.force), out)
        out("You may now unlock the data store.\n")
        return
    ip = _parse_ip(args.ip)
    released = release_ips(Store(backend), [(ip, None)])
    if not released:
        raise CommandError(f"IP address {ip} is not assigned")
    out(f"Successfully released IP address {ip}\n")


def _load_report(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise CommandError(f"open {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise CommandError(f"cannot parse report {path}: {e}") from None
    if not isinstance(data, dict):
        raise CommandError(f"cannot parse report {path}: not a JSON object")
    return data


def release_from_reports(backend: Backend, paths: list[str], force: bool, out: Out) -> None:
    meta = cluster_meta(backend)
    reports = []
    found_current = False
    for path in paths:
        r = _load_report(path)
        if r.get("clusterGUID", "") != meta.guid:
            raise CommandError(
                f"cluster does not match the provided report ({path}): mismatched cluster GUID. Refusing to release"
            )
        if r.get("version") != client_version():
            if not force:
                raise CommandError(
                    f"the provided report ({path}) was produced using a different version ({r.get('version')}) "
                    "of calicoctl. Refusing to release"
                )
            out("WARNING: Report was produced using a different version of calicoctl. Ignoring due to --force option\n")
        if r.get("clusterInformationRevision", "") == meta.revision:
            found_current = True
        reports.append(r)
    if not found_current:
        raise CommandError(
            "the provided reports are all stale - at least one should be up-to-date. Please generate a new "
            "report while the data store is locked and try again"
        )
    if not meta.locked:
        if not force:
            raise CommandError("data store is not locked. Either lock the data store, or re-run with --force")
        out("WARNING: Data store is not locked. Ignoring due to --force option\n")

    # Only what every report calls leaked (and, for handles, at the same revision).
    leaked_ips: dict[str, dict[str, Any]] | None = None
    leaked_handles: dict[str, dict[str, Any]] | None = None
    for r in reports:
        ips = {}
        for allocs in (r.get("allocations") or {}).values():
            for a in allocs or []:
                if a.get("inUse") or (leaked_ips is not None and a.get("ip") not in leaked_ips):
                    continue
                ips[a["ip"]] = a
        leaked_ips = ips
        handles = {}
        for h in r.get("leakedHandles") or []:
            if leaked_handles is None or (h.get("ID") in leaked_handles
                                          and leaked_handles[h["ID"]].get("Revision") == h.get("Revision")):
                handles[h["ID"]] = h
        leaked_handles = handles

    if leaked_ips:
        _release_report_ips(backend, leaked_ips, out)
    else:
        out("Report didn't contain any leaked IPs to clean up.\n")
    if leaked_handles:
        _release_report_handles(backend, leaked_handles, out)
    else:
        out("Report didn't contain any handles to clean up.\n")


def _release_report_ips(backend: Backend, leaked: dict[str, dict[str, Any]], out: Out) -> None:
    from ipam import blocks as blk
    from ipam.release import find_block_cidr, release_ips
    from ipam.store import Store

    store = Store(backend)
    out(f"Releasing {len(leaked)} old IPs...\n")
    wanted: list[tuple[str, str | None]] = []
    sequence: dict[str, int] = {}
    skipped = 0
    for ip, entry in leaked.items():
        cidr = find_block_cidr(store, ip)
        if cidr is None:
            skipped += 1
            continue
        try:
            block = store.get_block(cidr).value
        except NotFound:
            skipped += 1
            continue
        ordinal = blk.ordinal_of(block, ip)
        if block.allocations[ordinal] is None or blk.handle_of(block, ordinal) != entry.get("handle"):
            skipped += 1  # freed, or re-allocated to someone else since the report
            continue
        wanted.append((ip, cidr))
        if entry.get("sequenceNumber") is not None:
            sequence[ip] = int(entry["sequenceNumber"])
    try:
        released = release_ips(store, wanted, sequence_numbers=sequence)
    except DatastoreError as e:
        out(f"An error occurred while releasing some IPs: {e}.  Problems are often caused by an out-of-date "
            "IPAM report.  Try regenerating the IPAM report and retry.\n")
        return
    out(f"Released {len(released)} IPs successfully\n")
    unallocated = len(leaked) - len(released)
    if unallocated:
        out(f"{unallocated} addresses marked as leaked in the report had already been cleaned up.\n")


def _release_report_handles(backend: Backend, leaked: dict[str, dict[str, Any]], out: Out) -> None:
    out(f"Deleting {len(leaked)} handles...\n")
    out("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.\n")
    released = skipped = errors = 0
    marks = []
    for handle_id, info in sorted(leaked.items()):
        try:
            backend.delete(HandleKey(handle_id), str(info.get("Revision") or "") or None)
            released += 1
            marks.append(".")
        except (NotFound, Conflict):
            skipped += 1
            marks.append("x")
        except DatastoreError as e:
            errors += 1
            marks.append(f"\nDeleting handle {handle_id} failed: {e}.\n")
    out("".join(marks) + "\n")
    out(f"Released {released} handles; {skipped} skipped; {errors} errors.\n")


# --------------------------------------------------------------------------
# configure
# --------------------------------------------------------------------------

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _configure(args: argparse.Namespace, session: Session, out: Out) -> None:
    from pydantic import ValidationError

    from datastore.models.ipam import IPAMConfigurationSpec
    from ipam.config import IPAMSettings, load_settings, save_settings

    if args.strictaffinity is None and args.max_blocks_per_host is None:
        raise CommandError("Nothing to configure: give --strictaffinity and/or --max-blocks-per-host")
    strict: bool | None = None
    if args.strictaffinity is not None:
        if args.strictaffinity in _TRUE:
            strict = True
        elif args.strictaffinity in _FALSE:
            strict = False
        else:
            raise CommandError(f"Invalid value for --strictaffinity: '{args.strictaffinity}' (true or false)")
    backend = session.backend()
    current = load_settings(backend)
    new = IPAMSettings(
        strict_affinity=current.strict_affinity if strict is None else strict,
        auto_allocate_blocks=current.auto_allocate_blocks,
        max_blocks_per_host=current.max_blocks_per_host if args.max_blocks_per_host is None
        else args.max_blocks_per_host,
    )
    try:
        IPAMConfigurationSpec(
            strict_affinity=new.strict_affinity,
            auto_allocate_blocks=new.auto_allocate_blocks,
            max_blocks_per_host=new.max_blocks_per_host or None,
        )
    except ValidationError as e:
        msg = "; ".join(str(err.get("msg", "")).removeprefix("Value error, ") for err in e.errors())
        raise CommandError(f"error: {msg}") from None
    save_settings(backend, new)
    if strict is not None:
        out(f"Successfully set StrictAffinity to: {'true' if strict else 'false'}\n")
    if args.max_blocks_per_host is not None:
        out(f"Successfully set MaxBlocksPerHost to: {args.max_blocks_per_host}\n")
