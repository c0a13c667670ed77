"""ADD (SPEC.md section 2 "ADD", section 5 "ADD Success")."""
from __future__ import annotations

from conformance.rules.base import Context, rule
from conformance.results import container_addresses
from conformance.rules.checks import (
    expect_failed,
    expect_ok,
    expect_valid_result,
    verify_in_netns,
)
from conformance.spec import supports_check


@rule(
    "add-result-schema",
    "§5 ADD Success",
    "ADD result matches the version's schema: cniVersion echoed; interfaces, ips (with interface "
    "index), routes, dns typed as defined; CNI_IFNAME listed with sandbox=CNI_NETNS and an address",
)
def add_result_schema(ctx: Context) -> None:
    att = ctx.attachment()
    out = ctx.add(att)
    assert out.result is not None
    expect_valid_result(ctx, out.result, att)


@rule(
    "add-interface-in-netns",
    "§2 ADD; §5 ADD Success",
    "after ADD, CNI_IFNAME exists in CNI_NETNS with the reported MAC, addresses and routes; "
    "reported host interfaces exist",
)
def add_interface_in_netns(ctx: Context) -> None:
    att = ctx.attachment()
    out = ctx.add(att)
    assert out.result is not None
    verify_in_netns(ctx, att, out.result)


@rule(
    "add-twice",
    "§2 ADD",
    "a second ADD for the same (CNI_CONTAINERID, CNI_IFNAME) either fails with the error object or "
    "is idempotent (same addresses as the first); either way the first attachment stays intact "
    "(addresses in place; CHECK passes)",
)
def add_twice(ctx: Context) -> None:
    # The spec says a runtime should not do this; plugins may reject it (the
    # reference plugins do: the interface exists) or treat it as a repeat of the
    # same request (upstream Calico does). Handing out other addresses is wrong.
    att = ctx.attachment()
    first = ctx.add(att)
    assert first.result is not None
    second = ctx.try_add(att)
    if second.ok and second.result is not None:
        ctx.expect(
            container_addresses(second.result, att.ifname) == container_addresses(first.result, att.ifname),
            "second ADD of the same attachment succeeded with other addresses: "
            f"{container_addresses(second.result, att.ifname)} vs {container_addresses(first.result, att.ifname)}",
        )
        what = "after the repeated second ADD"
    else:
        expect_failed(ctx, second, "second ADD of the same attachment")
        what = "after the rejected second ADD"
    verify_in_netns(ctx, att, first.result, what=what)
    if supports_check(ctx.version):
        expect_ok(ctx, ctx.runtime.check(att), f"CHECK of the first attachment {what}")
