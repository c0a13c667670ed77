"""`python -m conformance --cni-path DIR --conf FILE [...]`: run the CNI conformance rules."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from conformance.invoke import PluginNotFound, find_plugin
from conformance.netconf import ConfigError, NetworkConfig
from conformance.report import render
from conformance.rules import all_rules
from conformance.rules.base import SuiteOptions
from conformance.runner import FAILING, Expectation, ExpectationError, RuleResult, Suite
from conformance.spec import TESTABLE_VERSIONS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def default_cnitool() -> str | None:
    cached = Path(os.environ.get("PYCALICO_CACHE", "/var/cache/pycalico")) / "bin" / "cnitool"
    if cached.is_file():
        return str(cached)
    return shutil.which("cnitool")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="CNI specification conformance suite: runs each rule against a plugin, "
        "directly (exec) and through libcni (cnitool), for every requested spec version.",
    )
    p.add_argument("--cni-path", action="append", default=[], metavar="DIR[:DIR]",
                   help="directories holding the plugin binaries (repeatable; also the chain plugin)")
    p.add_argument("--conf", metavar="FILE", help="network configuration (.conflist or single .conf)")
    p.add_argument("--versions", default=",".join(TESTABLE_VERSIONS),
                   help="comma-separated spec versions to test (the config's cniVersion is overridden)")
    p.add_argument("--driver", choices=("exec", "cnitool", "both"), default="both")
    p.add_argument("--cnitool", default=None, help="cnitool binary (default $PYCALICO_CACHE/bin/cnitool)")
    p.add_argument("--expect-unimplemented", action="append", default=[], metavar="RULE[@DRIVER][:VERSIONS]=REASON",
                   help="the plugin is known not to implement RULE: report xfail instead of FAIL")
    p.add_argument("--rules", default=None, help="comma-separated subset of rules to run")
    p.add_argument("--chain-plugin", default="tuning", help="plugin type appended for chain-prevresult")
    p.add_argument("--chain-conf", default=None, help="JSON object used as the chained plugin (overrides --chain-plugin)")
    p.add_argument("--cni-args", default=None, help="CNI_ARGS for every attachment (K=V;K2=V2)")
    p.add_argument("--cap-args", default=None, help="capability args as JSON (runtimeConfig / cnitool CAP_ARGS)")
    p.add_argument("--netns-prefix", default="cnf", help="prefix of the namespaces the suite creates")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per plugin/cnitool execution")
    p.add_argument("--report-json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--list-rules", action="store_true", help="print the rules and their spec sections, then exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print each result to stderr as it completes")
    return p


def _list_rules() -> str:
    lines = []
    for r in all_rules():
        scope = "exec only" if r.exec_only_why else "exec+cnitool"
        since = f", since {r.min_version}" if r.min_version != "0.3.1" else ""
        lines.append(f"{r.name}  [{r.section}] ({scope}{since})\n    {r.summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_rules:
        print(_list_rules())
        return EXIT_OK
    try:
        suite = _suite_from_args(args)
    except (ConfigError, ExpectationError, PluginNotFound, ValueError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.geteuid() != 0:
        print("conformance: must run as root (creates network namespaces)", file=sys.stderr)
        return EXIT_USAGE

    def progress(r: RuleResult) -> None:
        if args.verbose:
            print(f"{r.status:>9}  {r.rule} ({r.driver}, {r.version}) {r.duration * 1000:.0f}ms", file=sys.stderr)

    start = time.monotonic()
    results = suite.run(progress)
    elapsed = time.monotonic() - start
    print(f"CNI conformance: {args.conf} (plugins: {', '.join(suite.conf.plugin_types)}; "
          f"chain: {suite.options.chain_plugin.get('type')}; CNI_PATH={':'.join(suite.options.cni_path)})")
    print(render(results, suite.versions, suite.drivers, elapsed))
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(
            {"elapsed": round(elapsed, 3), "results": [r.as_dict() for r in results]}, indent=2))
    return EXIT_FAILED if any(r.status in FAILING for r in results) else EXIT_OK


def _suite_from_args(args: argparse.Namespace) -> Suite:
    if not args.conf or not args.cni_path:
        raise ValueError("--conf and --cni-path are required")
    cni_path = [d for entry in args.cni_path for d in entry.split(":") if d]
    conf = NetworkConfig.load(args.conf)
    for plugin_type in conf.plugin_types:
        find_plugin(plugin_type, cni_path)
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    unknown = [v for v in versions if v not in TESTABLE_VERSIONS]
    if unknown or not versions:
        raise ValueError(f"--versions: {unknown or 'none'} (testable: {', '.join(TESTABLE_VERSIONS)})")
    drivers = ["exec", "cnitool"] if args.driver == "both" else [args.driver]
    cnitool = args.cnitool or default_cnitool()
    if "cnitool" in drivers and not (cnitool and os.access(cnitool, os.X_OK)):
        raise ValueError("cnitool not found: pass --cnitool or run scripts/build-go-peers")
    known = {r.name for r in all_rules()}
    expectations = [Expectation.parse(e, known) for e in args.expect_unimplemented]
    rule_names = None
    if args.rules:
        rule_names = [r.strip() for r in args.rules.split(",") if r.strip()]
        bad = [r for r in rule_names if r not in known]
        if bad:
            raise ValueError(f"--rules: unknown rule(s) {bad}")
    chain = json.loads(args.chain_conf) if args.chain_conf else {"type": args.chain_plugin}
    if not isinstance(chain, dict) or not chain.get("type"):
        raise ValueError("--chain-conf must be a JSON object with a type")
    cap_args = json.loads(args.cap_args) if args.cap_args else None
    if cap_args is not None and not isinstance(cap_args, dict):
        raise ValueError("--cap-args must be a JSON object")
    options = SuiteOptions(
        cni_path=cni_path, chain_plugin=chain, cni_args=args.cni_args,
        capability_args=cap_args, timeout=args.timeout, netns_prefix=args.netns_prefix,
    )
    return Suite(conf, options, versions, drivers, cnitool, expectations, rule_names)
