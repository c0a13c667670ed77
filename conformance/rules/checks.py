"""Assertions shared by rules: error output, and what an ADD left in the namespace."""
from __future__ import annotations

import ipaddress
from typing import Any

from conformance.invoke import Call
from conformance.netns import host_link_exists
from conformance.results import add_result_problems, container_addresses, error_problems
from conformance.runtime import Attachment, Outcome
from conformance.rules.base import Context

_TABLE_NAMES = {"254": "main", "255": "local", "253": "default"}


def expect_error_output(ctx: Context, call: Call, what: str) -> dict[str, Any]:
    """A failed plugin call: non-zero exit and exactly one well-formed error object on stdout."""
    ctx.expect(call.returncode != 0, f"{what}: expected a failure exit status; {call.describe()}")
    try:
        obj = call.stdout_json()
    except ValueError:
        ctx.fail(f"{what}: stdout is not a single JSON error object; {call.describe()}")
    problems = error_problems(obj)
    ctx.expect(not problems, f"{what}: malformed error object ({'; '.join(problems)}); {call.describe()}")
    return obj  # type: ignore[no-any-return]


def expect_error_code(ctx: Context, call: Call, code: int, what: str, names: tuple[str, ...] = ()) -> None:
    obj = expect_error_output(ctx, call, what)
    ctx.expect(obj["code"] == code, f"{what}: error code {obj['code']}, expected {code}; {call.describe()}")
    text = f"{obj.get('msg', '')} {obj.get('details', '')}"
    for name in names:
        ctx.expect(name in text, f"{what}: error message must name {name}; got {text.strip()!r}")


def expect_failed(ctx: Context, out: Outcome, what: str) -> None:
    """A runtime operation that must fail (both drivers); the exec driver also checks the error object."""
    ctx.expect(not out.ok, f"{what}: expected failure but it succeeded; {out.describe()}")
    last = out.last
    if last is not None and last.is_plugin:
        expect_error_output(ctx, last, what)


def expect_ok(ctx: Context, out: Outcome, what: str) -> None:
    ctx.expect(out.ok, f"{what} failed: {out.describe()}")


def expect_valid_result(ctx: Context, result: dict[str, Any], att: Attachment, what: str = "ADD result") -> None:
    problems = add_result_problems(result, ctx.version, att.ifname, att.netns_path)
    ctx.expect(not problems, f"{what} (cniVersion {ctx.version}): " + "; ".join(problems))


def verify_in_netns(ctx: Context, att: Attachment, result: dict[str, Any], what: str = "after ADD") -> None:
    """The container interface exists with the reported MAC, addresses and routes; host-side
    interfaces the result lists (no sandbox) exist on the host."""
    link = att.netns.link(att.ifname)
    ctx.expect(link is not None, f"{what}: interface {att.ifname} does not exist in {att.netns_path}")
    assert link is not None
    interfaces = [i for i in result.get("interfaces") or [] if isinstance(i, dict)]
    for itf in interfaces:
        if itf.get("name") == att.ifname and itf.get("sandbox") and itf.get("mac"):
            actual = str(link.get("address", "")).lower()
            ctx.expect(actual == str(itf["mac"]).lower(), f"{what}: {att.ifname} has MAC {actual}, result says {itf['mac']}")
        if not itf.get("sandbox") and itf.get("name"):
            ctx.expect(host_link_exists(str(itf["name"])), f"{what}: host interface {itf['name']} from the result does not exist")
    expected = container_addresses(result, att.ifname)
    ctx.expect(bool(expected), f"{what}: the result assigns no address to {att.ifname}")
    actual_addrs = att.netns.addresses(att.ifname)
    for addr in expected:
        ctx.expect(addr in actual_addrs, f"{what}: {addr} reported but not on {att.ifname} (has {[str(a) for a in actual_addrs]})")
    routes = att.netns.routes()
    for r in result.get("routes") or []:
        if not isinstance(r, dict) or not isinstance(r.get("dst"), str):
            continue
        dst = ipaddress.ip_network(r["dst"], strict=False)
        table = r.get("table")
        candidates = [e for e in routes if e.dst == dst]
        if table is not None:
            names = {str(table), _TABLE_NAMES.get(str(table), str(table))}
            candidates = [e for e in candidates if e.table in names]
        ctx.expect(bool(candidates), f"{what}: route {r['dst']} reported but not in {att.netns_path}")
        if r.get("gw"):
            gw = ipaddress.ip_address(r["gw"])
            ctx.expect(any(gw in e.gateways for e in candidates), f"{what}: route {r['dst']} is not via {gw}")


def expect_interface_gone(ctx: Context, att: Attachment, what: str) -> None:
    ctx.expect(att.netns.link(att.ifname) is None, f"{what}: interface {att.ifname} still exists in {att.netns_path}")
