"""The suite catches what it claims to: the fixture plugin passes everything when intact, and every
rule fails for at least one BROKEN_MODE."""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conformance.fixtures import MODES, broken_plugin_conf, install_broken_plugin, write_conf
from conformance.rules import all_rules
from conformance.spec import TESTABLE_VERSIONS
from tests.conformance.conftest import GoPeers, SuiteRun, run_suite, suite_command

pytestmark = pytest.mark.netns

# mode -> rules it must make fail (it may trip others too)
MODE_TARGETS: dict[str, set[str]] = {
    "version-bad": {"version-output"},
    "schema-bad": {"add-result-schema"},
    "no-address": {"add-interface-in-netns"},
    "add-twice-realloc": {"add-twice"},
    "del-keeps-iface": {"del-after-add"},
    "del-strict": {"del-without-add", "del-twice"},
    "del-needs-netns": {"del-missing-netns", "del-empty-netns"},
    "check-fails": {"check-after-add"},
    "check-lax": {"check-detects-tamper"},
    "mangle-result": {"add-result-schema", "chain-prevresult"},
    "status-fails": {"status"},
    "gc-drops-valid": {"gc"},
    "gc-noop": {"gc"},
    "gc-needs-list": {"gc"},
    "wrong-codes": {
        "error-malformed-json", "error-missing-command", "error-unknown-command",
        "error-unsupported-version", "error-missing-env",
    },
    "plain-errors": {"error-shape"},
    "noisy-stdout": {"stdout-json-only"},
    "exit-zero-on-error": {"exit-status"},
}


def _run_fixture(mode: str, index: int, base: Path, go_peers: GoPeers, versions: str, *extra: str) -> SuiteRun:
    workdir = base / mode
    workdir.mkdir()
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    install_broken_plugin(bin_dir)
    tag = f"{os.getpid() % 10000}{index:02d}"
    conf = write_conf(workdir / "net.conflist",
                      broken_plugin_conf(f"cnf-brk-{tag}", f"10.246.{index}.0/24", workdir / "state"))
    report = workdir / "report.json"
    cmd = suite_command(conf, [bin_dir, go_peers.plugins], report, "--versions", versions,
                        "--cnitool", str(go_peers.cnitool), "--netns-prefix", f"cnfb{tag}", *extra)
    env = {**os.environ, "BROKEN_MODE": mode}
    return run_suite(cmd, report, env=env)


@pytest.fixture(scope="session")
def fixture_runs(go_peers: GoPeers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SuiteRun]:
    """"none": the intact plugin against every rule, version and driver (no false positives).
    Each broken mode: the rules it targets at cniVersion 1.1.0 (where every rule applies), both
    drivers. Two suites run at a time; the long intact run starts first."""
    base = tmp_path_factory.mktemp("broken")
    with ThreadPoolExecutor(max_workers=2) as pool:
        intact = pool.submit(_run_fixture, "none", 0, base, go_peers, ",".join(TESTABLE_VERSIONS))
        futures = {
            m: pool.submit(_run_fixture, m, i + 1, base, go_peers, "1.1.0", "--rules", ",".join(sorted(MODE_TARGETS[m])))
            for i, m in enumerate(sorted(MODE_TARGETS))
        }
        runs = {m: f.result() for m, f in futures.items()}
        runs["none"] = intact.result()
    return runs


def test_every_mode_has_targets() -> None:
    assert set(MODE_TARGETS) == set(MODES)
    names = {r.name for r in all_rules()}
    for targets in MODE_TARGETS.values():
        assert targets <= names


def test_intact_fixture_passes_everything(fixture_runs: dict[str, SuiteRun]) -> None:
    run = fixture_runs["none"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert not run.with_status("FAIL", "ERROR", "XFAIL", "XPASS")
    passed = run.with_status("pass")
    assert {r["driver"] for r in passed} == {"exec", "cnitool"}
    assert {r["version"] for r in passed} == set(TESTABLE_VERSIONS)
    assert {r["rule"] for r in passed} == {r.name for r in all_rules()}


@pytest.mark.parametrize("mode", sorted(MODE_TARGETS))
def test_broken_mode_is_caught(mode: str, fixture_runs: dict[str, SuiteRun]) -> None:
    run = fixture_runs[mode]
    assert run.report, run.stdout + run.stderr
    assert run.returncode == 1, run.stdout
    missing = MODE_TARGETS[mode] - run.failed_rules()
    assert not missing, f"BROKEN_MODE={mode} did not fail {sorted(missing)}:\n{run.stdout}"
    assert not run.with_status("ERROR"), run.stdout


def test_every_rule_fails_for_some_mode(fixture_runs: dict[str, SuiteRun]) -> None:
    failed: set[str] = set()
    for mode, run in fixture_runs.items():
        if mode != "none":
            failed |= run.failed_rules()
    assert {r.name for r in all_rules()} - failed == set()


def test_cnitool_driver_catches_defects_too(fixture_runs: dict[str, SuiteRun]) -> None:
    """Each rule that runs through libcni also fails through libcni for some mode."""
    libcni_rules = {r.name for r in all_rules() if "cnitool" in r.drivers}
    failed = {
        r["rule"] for mode, run in fixture_runs.items() if mode != "none"
        for r in run.with_status("FAIL") if r["driver"] == "cnitool"
    }
    assert libcni_rules - failed == set()


def test_no_namespaces_left_behind(fixture_runs: dict[str, SuiteRun]) -> None:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"cnfb{os.getpid() % 10000}" not in listing
