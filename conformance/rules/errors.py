"""Error results (SPEC.md section 5 "Error", section 2 "Parameters"/"Errors")."""
from __future__ import annotations

import json

from conformance.rules.base import Context, rule
from conformance.rules.checks import expect_error_code, expect_error_output
from conformance.spec import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_ENV,
    REQUIRED_ENV,
    UNSUPPORTED_VERSION,
    supports_check,
)

EXEC_ONLY = "libcni reports plugin errors as Go errors; the error object is only visible on exec"


def _malformed(version: str) -> bytes:
    return ('{"cniVersion": "%s", "name": "cnf-malformed", "type": ' % version).encode()


@rule(
    "error-malformed-json",
    "§5 Error (code 6)",
    "ADD and DEL with malformed JSON on stdin fail with code 6 (failed to decode content)",
    exec_only=EXEC_ONLY,
)
def error_malformed_json(ctx: Context) -> None:
    rt = ctx.exec
    att = ctx.attachment()
    for command in ("ADD", "DEL"):
        call = rt.exec_plugin(0, rt.env(command, att), _malformed(ctx.version))
        expect_error_code(ctx, call, ERR_DECODE, f"{command} with malformed JSON")


@rule(
    "error-missing-command",
    "§2 Parameters; §5 Error (code 4)",
    "no CNI_COMMAND: fails with code 4 naming CNI_COMMAND",
    exec_only=EXEC_ONLY,
)
def error_missing_command(ctx: Context) -> None:
    rt = ctx.exec
    att = ctx.attachment()
    env = rt.env(None, att)
    call = rt.exec_plugin(0, env, rt.conf.plugin_request(0))
    expect_error_code(ctx, call, ERR_INVALID_ENV, "missing CNI_COMMAND", names=("CNI_COMMAND",))


@rule(
    "error-unknown-command",
    "§2 CNI operations; §5 Error (code 4)",
    "CNI_COMMAND=FROB: fails with code 4 naming CNI_COMMAND",
    exec_only=EXEC_ONLY,
)
def error_unknown_command(ctx: Context) -> None:
    rt = ctx.exec
    att = ctx.attachment()
    call = rt.exec_plugin(0, rt.env("FROB", att), rt.conf.plugin_request(0))
    expect_error_code(ctx, call, ERR_INVALID_ENV, "CNI_COMMAND=FROB", names=("CNI_COMMAND",))


@rule(
    "error-unsupported-version",
    "§1 Version considerations; §5 Error (code 1)",
    f"ADD with cniVersion {UNSUPPORTED_VERSION} fails with code 1 (incompatible CNI version)",
    exec_only=EXEC_ONLY,
)
def error_unsupported_version(ctx: Context) -> None:
    rt = ctx.exec
    att = ctx.attachment()
    request = json.loads(rt.conf.plugin_request(0))
    request["cniVersion"] = UNSUPPORTED_VERSION
    call = rt.exec_plugin(0, rt.env("ADD", att), json.dumps(request).encode())
    if call.ok:
        rt.exec_plugin(0, rt.env("DEL", att), rt.conf.plugin_request(0))
    expect_error_code(ctx, call, ERR_INCOMPATIBLE_VERSION, f"ADD with cniVersion {UNSUPPORTED_VERSION}")


@rule(
    "error-missing-env",
    "§2 CNI operations (required parameters); §5 Error (code 4)",
    "ADD/DEL/CHECK each missing one required variable (CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME as "
    "the command requires) fail with code 4 naming the variable",
    exec_only=EXEC_ONLY,
)
def error_missing_env(ctx: Context) -> None:
    rt = ctx.exec
    ns = ctx.netns()
    real = ctx.attachment(ns)
    added = ctx.add(real, what="ADD of a real attachment (for CHECK/DEL)")
    prev = added.result if supports_check(ctx.version) else None
    commands = ["ADD", "DEL"] + (["CHECK"] if supports_check(ctx.version) else [])
    for n, command in enumerate(commands):
        for var in REQUIRED_ENV[command]:
            if var == "CNI_COMMAND":
                continue
            # ADD uses a fresh identity so a plugin that wrongly proceeds cannot hit the real one.
            att = rt.attachment(ns, f"cnf{n}{var[4:6].lower()}") if command == "ADD" else real
            env = rt.env(command, att)
            env[var] = None
            stdin = rt.conf.plugin_request(0, prev_result=prev if command != "ADD" else None)
            call = rt.exec_plugin(0, env, stdin)
            if call.ok and command == "ADD":
                rt.exec_plugin(0, rt.env("DEL", att), rt.conf.plugin_request(0))
            expect_error_code(ctx, call, ERR_INVALID_ENV, f"{command} without {var}", names=(var,))


@rule(
    "error-shape",
    "§5 Error",
    "failures print exactly one JSON object {code: int>0, msg: non-empty string, details?: string, "
    "cniVersion?: string} on stdout and exit non-zero (ADD into a missing netns, malformed JSON, "
    "unknown command)",
    exec_only=EXEC_ONLY,
)
def error_shape(ctx: Context) -> None:
    rt = ctx.exec
    ns = ctx.netns()
    att = rt.attachment(ns)
    missing = rt.attachment(ns)
    env = rt.env("ADD", missing, netns_path=f"/run/netns/cnf-missing-{missing.container_id}")
    cases = [
        ("ADD into a missing namespace", env, rt.conf.plugin_request(0)),
        ("ADD with malformed JSON", rt.env("ADD", att), _malformed(ctx.version)),
        ("CNI_COMMAND=FROB", rt.env("FROB", att), rt.conf.plugin_request(0)),
    ]
    for what, env, stdin in cases:
        expect_error_output(ctx, rt.exec_plugin(0, env, stdin), what)
