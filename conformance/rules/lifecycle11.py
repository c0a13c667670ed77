"""STATUS and GC, new in 1.1.0 (SPEC.md section 2 "STATUS"/"GC", section 3 "Garbage-collecting")."""
from __future__ import annotations

import secrets

from conformance.rules.base import Context, RuleNotApplicable, rule
from conformance.rules.checks import expect_interface_gone, expect_ok, verify_in_netns


@rule(
    "status",
    "§2 STATUS",
    "STATUS succeeds (exit 0, nothing but JSON on stdout) when the plugin can serve ADD",
    min_version="1.1.0",
)
def status(ctx: Context) -> None:
    out = ctx.runtime.status()
    expect_ok(ctx, out, "STATUS")
    for call in out.calls:
        if call.is_plugin and call.stdout.strip():
            ctx.expect(call.stdout_json_or_none() is not None, f"STATUS printed non-JSON: {call.describe()}")


@rule(
    "gc",
    "§2 GC; §3 Garbage-collecting a network",
    "exec: with A live and B's netns gone without DEL, GC with cni.dev/valid-attachments=[A] "
    "succeeds silently, leaves A intact (CHECK passes) and releases B (ADD of B's container ID and "
    "ifname succeeds again). cnitool: libcni GC (DEL of cached attachments, then GC without a "
    "list) succeeds and removes them. Runs under a unique network name",
    min_version="1.1.0",
)
def gc(ctx: Context) -> None:
    if ctx.runtime.conf.disable_gc:
        raise RuleNotApplicable("the configuration sets disableGC")
    rt = ctx.runtime.with_conf(ctx.runtime.conf.renamed(f"cnf-gc-{secrets.token_hex(4)}"))
    a = ctx.attachment(runtime=rt)
    out_a = ctx.add(a, runtime=rt, what="ADD of A")
    assert out_a.result is not None
    if ctx.driver == "cnitool":
        expect_ok(ctx, rt.gc([]), "cnitool gc")
        expect_interface_gone(ctx, a, "after libcni GC (which DELs stale cached attachments)")
        expect_ok(ctx, ctx.delete(a, runtime=rt), "DEL of A after GC")
        return
    b = ctx.attachment(runtime=rt)
    ctx.add(b, runtime=rt, what="ADD of B")
    b.netns.delete()  # B's container is gone without a DEL: GC is what cleans up after it
    out = rt.gc([a])
    expect_ok(ctx, out, "GC with valid-attachments=[A]")
    for call in out.calls:
        ctx.expect(not call.stdout.strip(), f"GC printed output on success: {call.describe()}")
    verify_in_netns(ctx, a, out_a.result, what="A after GC")
    expect_ok(ctx, rt.check(a), "CHECK of A after GC")
    # GC released B's resources (IPAM reservations included: GC must reach delegated plugins),
    # so the same (container ID, ifname) can be ADDed again.
    b_again = rt.attachment(ctx.netns(), b.ifname, container_id=b.container_id)
    ctx.add(b_again, runtime=rt, what="ADD of B's (container ID, ifname) after GC released it")
    expect_ok(ctx, ctx.delete(a, runtime=rt), "DEL of A after GC")
    expect_ok(ctx, ctx.delete(b_again, runtime=rt), "DEL of B after GC")
