"""``calicoctl ipam split <NUMBER> (--cidr=CIDR | --name=POOL)``: split an IP
pool into NUMBER (a power of 2, at least 2) child pools of equal size.

As upstream: the datastore must be locked (``calicoctl datastore migrate
lock``) so no IPAM data changes meanwhile; the pool is disabled, children
named ``split-<pool>-<i>`` are created with the pool's labels, annotations
and spec (CIDR replaced, enabled), then the pool is deleted.  Its blocks,
affinities and allocations are left as they are: every block lies inside one
child (children are no smaller than a block), so nothing is reallocated.

Unlike upstream, every child is computed and validated (CIDR, block size,
name free) before the first write, so a split that cannot succeed changes
nothing.  Upstream's messages, but each printed line ends with a newline.
"""
from __future__ import annotations

import argparse
import copy
import ipaddress
from typing import Any, Callable

from datastore.backend import Backend
from datastore.errors import DatastoreError, NotFound
from datastore.keys import ListOptions, ResourceKey
from datastore.models import ResourceError, dump_resource, load_resource

from calicoctl.commands import CommandError, Session

Out = Callable[[str], None]
MAX_NAME = 253


class SplitError(ValueError):
    pass


def split_cidr(cidr: str, parts: int) -> list[str]:
    """``cidr`` cut into ``parts`` equal, consecutive subnets."""
    if parts < 2 or parts & (parts - 1):
        raise SplitError(f"number to split CIDR into is not a valid power of 2: {parts}")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise SplitError(f"error reading CIDR {cidr} before attempting to split it") from None
    power = parts.bit_length() - 1
    if net.prefixlen + power > net.max_prefixlen:
        raise SplitError(f"the CIDR {cidr} is not large enough to be split into {parts} parts")
    return [str(s) for s in net.subnets(prefixlen_diff=power)]


def child_name(pool: str, index: int) -> str:
    name = f"split-{pool}-{index}"
    return name if len(name) <= MAX_NAME else f"split-{pool[:245]}-{index}"


def _same_cidr(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return a == b


def _find_pool(backend: Backend, name: str, cidr: str) -> tuple[dict[str, Any], str]:
    if name:
        try:
            kv = backend.get(ResourceKey("IPPool", name))
        except NotFound:
            raise CommandError(f"unable to find IP pool with name {name}: resource does not exist: "
                               f"IPPool({name}) with error: <nil>") from None
        except DatastoreError as e:
            raise CommandError(f"unable to find IP pool with name {name}: {e}") from None
        return kv.value, kv.revision
    try:
        pools = backend.list(ListOptions(kind="IPPool")).items
    except DatastoreError:
        raise CommandError(f"unable to list IP pools to find the pool specified by {cidr}") from None
    for kv in pools:
        if _same_cidr(str((kv.value.get("spec") or {}).get("cidr", "")), cidr):
            return kv.value, kv.revision
    raise CommandError(f"unable to find IP pool {name} covering the specified CIDR {cidr}")


def _children(pool: dict[str, Any], cidrs: list[str]) -> list[dict[str, Any]]:
    meta = pool.get("metadata") or {}
    out = []
    for i, c in enumerate(cidrs):
        child_meta = {"name": child_name(meta["name"], i)}
        for k in ("labels", "annotations"):
            if meta.get(k):
                child_meta[k] = copy.deepcopy(meta[k])
        spec = copy.deepcopy(pool.get("spec") or {})
        spec["cidr"] = c
        spec["disabled"] = False
        doc = {"apiVersion": pool.get("apiVersion", "projectcalico.org/v3"), "kind": "IPPool",
               "metadata": child_meta, "spec": spec}
        try:
            out.append(dump_resource(load_resource(doc)))
        except ResourceError as e:
            raise CommandError(f"error using unsafe create to make split pool with cidr {c}: {e}") from None
    return out


def run(args: argparse.Namespace, session: Session, out: Out) -> None:
    from calicoctl.ipamcmd import cluster_meta

    cidr, name = args.cidr or "", args.name or ""
    try:
        parts = int(args.number, 10)
    except ValueError:
        raise CommandError(f"error reading number to split IP pools into. {args.number} is not a valid number: "
                           f'strconv.Atoi: parsing "{args.number}": invalid syntax') from None
    if not cidr and not name:
        raise CommandError("no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split")
    backend = session.backend()
    try:
        locked = cluster_meta(backend).locked
    except DatastoreError as e:
        raise CommandError(f"error while checking if datastore was locked: {e}") from None
    if not locked:
        raise CommandError("datastore is not locked. Run the `calicoctl datastore migrate lock` command in "
                           "order split the IP pools")
    pool, revision = _find_pool(backend, name, cidr)
    pool_name = pool["metadata"]["name"]
    pool_cidr = str(pool["spec"]["cidr"])
    try:
        cidrs = split_cidr(pool_cidr, parts)
    except SplitError as e:
        raise CommandError(f"error splitting the CIDR {pool_cidr} into {parts} CIDRs: {e}") from None
    children = _children(pool, cidrs)
    for child in children:
        try:
            backend.get(ResourceKey("IPPool", child["metadata"]["name"]))
        except NotFound:
            continue
        raise CommandError(f"error using unsafe create to make split pool with cidr {child['spec']['cidr']}: "
                           f"resource already exists: IPPool({child['metadata']['name']})")

    key = ResourceKey("IPPool", pool_name)
    disabled = copy.deepcopy(pool)
    disabled["spec"]["disabled"] = True
    try:
        backend.update(key, disabled, revision)
        revision = backend.get(key).revision
    except DatastoreError:
        raise CommandError(f"error disabling IP pool {cidr or pool_cidr}") from None
    for child in children:
        try:
            backend.create(ResourceKey("IPPool", child["metadata"]["name"]), child)
        except DatastoreError as e:
            raise CommandError(f"error using unsafe create to make split pool with cidr "
                               f"{child['spec']['cidr']}: {e}") from None
    try:
        backend.delete(key, revision)
    except DatastoreError as e:
        raise CommandError(f"error removing the IP pool that was split {pool_name}: {e}") from None
    out(f"IP Pool {pool_name} was successfully split into {parts} smaller pools.\n")
    for child in children:
        out(f"Created {child['metadata']['name']} with CIDR {child['spec']['cidr']}.\n")
    out("Please refer to the documentation for final steps.\n")
