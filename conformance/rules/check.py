"""CHECK (SPEC.md section 2 "CHECK", section 3 "Checking an attachment")."""
from __future__ import annotations

from conformance.results import container_addresses
from conformance.rules.base import Context, RuleNotApplicable, rule
from conformance.rules.checks import expect_failed, expect_ok


def _require_check(ctx: Context) -> None:
    if ctx.runtime.conf.disable_check:
        raise RuleNotApplicable("the configuration sets disableCheck")


@rule(
    "check-after-add",
    "§2 CHECK; §3 Checking an attachment",
    "CHECK right after ADD (with the ADD result as prevResult) succeeds",
    min_version="0.4.0",
)
def check_after_add(ctx: Context) -> None:
    _require_check(ctx)
    att = ctx.attachment()
    ctx.add(att)
    expect_ok(ctx, ctx.runtime.check(att), "CHECK after ADD")


@rule(
    "check-detects-tamper",
    "§2 CHECK",
    "CHECK fails once an address from prevResult is removed from CNI_IFNAME",
    min_version="0.4.0",
)
def check_detects_tamper(ctx: Context) -> None:
    _require_check(ctx)
    att = ctx.attachment()
    out = ctx.add(att)
    assert out.result is not None
    addrs = container_addresses(out.result, att.ifname)
    ctx.expect(bool(addrs), f"the ADD result assigns no address to {att.ifname}: nothing to tamper with")
    ctx.expect(addrs[0] in att.netns.addresses(att.ifname), f"{addrs[0]} is not on {att.ifname} after ADD")
    att.netns.del_address(att.ifname, addrs[0])
    expect_failed(ctx, ctx.runtime.check(att), f"CHECK after removing {addrs[0]} from {att.ifname}")
