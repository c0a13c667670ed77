"""prevResult in a chain (SPEC.md section 3 "Adding an attachment" / "Deriving request
configuration", section 5 "ADD Success": a chained plugin receives our result as prevResult)."""
from __future__ import annotations

from conformance.invoke import PluginNotFound, find_plugin
from conformance.results import container_addresses
from conformance.rules.base import Context, rule
from conformance.rules.checks import expect_interface_gone, expect_ok, expect_valid_result, verify_in_netns
from conformance.spec import supports_check


@rule(
    "chain-prevresult",
    "§3 Adding an attachment; §3 Deriving request configuration; §5 ADD Success",
    "with a chained plugin appended (default tuning), that plugin accepts our result as prevResult "
    "and passes it on; CHECK and DEL (reverse order, prevResult = final result) succeed",
)
def chain_prevresult(ctx: Context) -> None:
    chain = ctx.options.chain_plugin
    try:
        find_plugin(str(chain.get("type", "")), ctx.options.cni_path)
    except PluginNotFound as exc:
        ctx.fail(f"chain plugin unavailable: {exc}")
    rt = ctx.runtime.with_conf(ctx.runtime.conf.with_plugin(chain))
    att = ctx.attachment(runtime=rt)
    out = ctx.add(att, runtime=rt, what=f"ADD through the chain (+{chain['type']})")
    assert out.result is not None
    expect_valid_result(ctx, out.result, att, what="final chain result")
    verify_in_netns(ctx, att, out.result, what="after chained ADD")
    if ctx.driver == "exec":
        ours = out.calls[-2].stdout_json()  # the result the chained plugin got as prevResult
        want = sorted(map(str, container_addresses(ours, att.ifname)))
        got = sorted(map(str, container_addresses(out.result, att.ifname)))
        ctx.expect(want == got, f"chained plugin changed the container addresses {want} -> {got}")
    if supports_check(ctx.version) and not rt.conf.disable_check:
        expect_ok(ctx, rt.check(att), "CHECK through the chain")
    expect_ok(ctx, ctx.delete(att, runtime=rt), "DEL through the chain")
    expect_interface_gone(ctx, att, "after chained DEL")
