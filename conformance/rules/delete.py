"""DEL (SPEC.md section 2 "DEL", section 3 "Deleting an attachment")."""
from __future__ import annotations

from conformance.rules.base import Context, rule
from conformance.rules.checks import expect_interface_gone, expect_ok, verify_in_netns


@rule(
    "del-after-add",
    "§2 DEL; §3 Deleting an attachment",
    "DEL after ADD succeeds, removes CNI_IFNAME, and releases what ADD took (ADD again with the "
    "same container ID and ifname succeeds)",
)
def del_after_add(ctx: Context) -> None:
    att = ctx.attachment()
    ctx.add(att)
    expect_ok(ctx, ctx.delete(att), "DEL after ADD")
    expect_interface_gone(ctx, att, "after DEL")
    again = ctx.add(att, what="ADD again after DEL")
    assert again.result is not None
    verify_in_netns(ctx, att, again.result, what="after ADD-DEL-ADD")
    expect_ok(ctx, ctx.delete(att), "DEL of the re-added attachment")


@rule("del-without-add", "§2 DEL", "DEL of an attachment that was never ADDed succeeds")
def del_without_add(ctx: Context) -> None:
    att = ctx.attachment()
    expect_ok(ctx, ctx.delete(att), "DEL without ADD")


@rule("del-twice", "§2 DEL", "DEL twice for the same (CNI_CONTAINERID, CNI_IFNAME) succeeds both times")
def del_twice(ctx: Context) -> None:
    att = ctx.attachment()
    ctx.add(att)
    expect_ok(ctx, ctx.delete(att), "first DEL")
    expect_ok(ctx, ctx.delete(att), "second DEL")


@rule(
    "del-missing-netns",
    "§2 DEL",
    "DEL succeeds when the namespace at CNI_NETNS no longer exists, and still releases the "
    "attachment (ADD with the same container ID into a new namespace succeeds)",
)
def del_missing_netns(ctx: Context) -> None:
    att = ctx.attachment()
    ctx.add(att)
    att.netns.delete()
    expect_ok(ctx, ctx.delete(att), "DEL with the namespace gone")
    att.netns.recreate()  # same path, so the same container ID for cnitool too
    again = ctx.add(att, what="ADD with the same container ID after DEL")
    assert again.result is not None
    expect_ok(ctx, ctx.delete(att), "DEL of the re-added attachment")


@rule(
    "del-empty-netns",
    "§2 DEL",
    "DEL with an empty CNI_NETNS succeeds, with and without prevResult (as CRI runtimes send it), "
    "and releases the attachment (ADD with the same container ID elsewhere succeeds)",
    exec_only="cnitool always passes an absolute namespace path",
)
def del_empty_netns(ctx: Context) -> None:
    rt = ctx.exec
    att = ctx.attachment()
    ctx.add(att)
    expect_ok(ctx, ctx.delete(att, netns_path=""), "DEL with CNI_NETNS=''")
    expect_ok(ctx, ctx.delete(att, netns_path="", prev_result=False), "DEL with CNI_NETNS='' and no prevResult")
    moved = rt.attachment(ctx.netns(), att.ifname, container_id=att.container_id)
    again = ctx.add(moved, what="ADD with the same container ID into a new namespace")
    assert again.result is not None
    expect_ok(ctx, ctx.delete(moved), "DEL of the re-added attachment")
