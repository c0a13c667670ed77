"""Process-level protocol: stdout carries only JSON, exit status matches the outcome
(SPEC.md section 2 "Overview"/"Errors", section 5)."""
from __future__ import annotations

import json
import secrets

from conformance.invoke import Call
from conformance.rules.base import Context, rule
from conformance.spec import supports_check, supports_gc_status

EXEC_ONLY = "needs the plugin's own stdout and exit status (cnitool prints libcni's)"


def _stdout_problem(call: Call, must_be_object: bool) -> str | None:
    text = call.stdout.strip()
    if not text:
        return "printed nothing (a JSON object is required)" if must_be_object else None
    try:
        obj = call.stdout_json()
    except ValueError as exc:
        return f"stdout is not exactly one JSON document ({exc})"
    if must_be_object and not isinstance(obj, dict):
        return f"stdout is JSON {type(obj).__name__}, not an object"
    return None


@rule(
    "stdout-json-only",
    "§2 Overview; §5 Result Types",
    "stdout holds nothing but one JSON document: the result for VERSION/ADD and errors, nothing or "
    "JSON for CHECK/DEL/STATUS/GC (logs belong on stderr)",
    exec_only=EXEC_ONLY,
)
def stdout_json_only(ctx: Context) -> None:
    rt = ctx.exec.with_conf(ctx.exec.conf.renamed(f"cnf-out-{secrets.token_hex(4)}"))
    att = ctx.attachment(runtime=rt)
    calls: list[tuple[str, Call, bool]] = []
    version = rt.exec_plugin(0, {"CNI_COMMAND": "VERSION"}, json.dumps({"cniVersion": ctx.version}).encode())
    calls.append(("VERSION", version, True))
    add = ctx.try_add(att, runtime=rt)
    calls += [("ADD", c, True) for c in add.calls]
    if add.ok and supports_check(ctx.version):
        calls += [("CHECK", c, False) for c in rt.check(att).calls]
    if supports_gc_status(ctx.version):
        calls += [("STATUS", c, False) for c in rt.status().calls]
        if add.ok:
            calls += [("GC", c, False) for c in rt.gc([att]).calls]
    calls += [("DEL", c, False) for c in ctx.delete(att, runtime=rt).calls]
    calls += [("DEL again", c, False) for c in ctx.delete(att, runtime=rt).calls]
    bad = rt.exec_plugin(0, rt.env("FROB", att), rt.conf.plugin_request(0))
    calls.append(("error (CNI_COMMAND=FROB)", bad, True))
    problems = []
    for what, call, must_be_object in calls:
        problem = _stdout_problem(call, must_be_object)
        if problem:
            problems.append(f"{what}: {problem}; {call.describe()}")
    ctx.expect(not problems, " | ".join(problems))


@rule(
    "exit-status",
    "§2 Errors",
    "exit 0 exactly when the operation succeeded: ADD/DEL/VERSION exit 0 with a result (not an "
    "error object); a failing ADD (missing netns) and an unknown command exit non-zero with an error object",
    exec_only=EXEC_ONLY,
)
def exit_status(ctx: Context) -> None:
    rt = ctx.exec
    att = ctx.attachment()
    version = rt.exec_plugin(0, {"CNI_COMMAND": "VERSION"}, json.dumps({"cniVersion": ctx.version}).encode())
    ctx.expect(version.returncode == 0, f"VERSION: {version.describe()}")
    add = ctx.try_add(att)
    ctx.expect(add.ok, f"ADD: {add.describe()}")
    result = add.result or {}
    ctx.expect("code" not in result, f"ADD exited 0 but printed an error object: {add.describe()}")
    delete = ctx.delete(att)
    ctx.expect(delete.ok, f"DEL: {delete.describe()}")
    ghost = rt.attachment(att.netns)
    failing = rt.exec_plugin(0, rt.env("ADD", ghost, netns_path=f"/run/netns/cnf-missing-{ghost.container_id}"),
                             rt.conf.plugin_request(0))
    unknown = rt.exec_plugin(0, rt.env("FROB", att), rt.conf.plugin_request(0))
    for what, call in (("ADD into a missing namespace", failing), ("CNI_COMMAND=FROB", unknown)):
        obj = call.stdout_json_or_none()
        ctx.expect(call.returncode != 0, f"{what} exited 0: {call.describe()}")
        ctx.expect(isinstance(obj, dict) and "code" in obj, f"{what}: no error object on stdout: {call.describe()}")
