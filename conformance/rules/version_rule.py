"""VERSION output (SPEC.md section 2 "VERSION", section 5 "VERSION Success")."""
from __future__ import annotations

import json

from conformance.results import version_problems
from conformance.rules.base import Context, rule


@rule(
    "version-output",
    "§2 VERSION; §5 VERSION Success",
    "VERSION prints {cniVersion: <requested>, supportedVersions: [...]} listing the tested version",
    exec_only="cnitool has no version verb (libcni GetVersionInfo is not exposed)",
)
def version_output(ctx: Context) -> None:
    rt = ctx.exec
    call = rt.exec_plugin(0, {"CNI_COMMAND": "VERSION"}, json.dumps({"cniVersion": ctx.version}).encode())
    ctx.expect(call.ok, f"VERSION failed: {call.describe()}")
    try:
        obj = call.stdout_json()
    except ValueError:
        ctx.fail(f"VERSION stdout is not one JSON document: {call.describe()}")
    problems = version_problems(obj, ctx.version, [ctx.version])
    ctx.expect(not problems, "VERSION: " + "; ".join(problems))
