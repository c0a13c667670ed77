"""STATUS and GC, new in 1.1.0 (SPEC.md section 2 "STATUS"/"GC", section 3 "Garbage-collecting")."""
from __future__ import annotations

import secrets

from conformance.rules.base import Context, rule
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
    "GC with cni.dev/valid-attachments=[A] succeeds silently and leaves A intact (CHECK passes); "
    "DEL of A and of the stale B still succeed. cnitool: libcni GC (DEL of cached attachments, "
    "then GC without a list) succeeds and removes them. Runs under a unique network name",
    min_version="1.1.0",
)
def gc(ctx: Context) -> None:
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
    out = rt.gc([a])
    expect_ok(ctx, out, "GC with valid-attachments=[A]")
    for call in out.calls:
        ctx.expect(not call.stdout.strip(), f"GC printed output on success: {call.describe()}")
    verify_in_netns(ctx, a, out_a.result, what="A after GC")
    expect_ok(ctx, rt.check(a), "CHECK of A after GC")
    expect_ok(ctx, ctx.delete(a, runtime=rt), "DEL of A after GC")
    expect_ok(ctx, ctx.delete(b, runtime=rt), "DEL of the stale B after GC")
