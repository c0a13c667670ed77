"""Runs rules × versions × drivers and classifies each outcome."""
from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from conformance.cnitool_runtime import CnitoolRuntime
from conformance.netconf import NetworkConfig
from conformance.rules import Rule, all_rules
from conformance.rules.base import Context, RuleFailed, RuleNotApplicable, SuiteOptions
from conformance.runtime import ExecRuntime, NotSupported, Runtime

# Statuses. FAIL and ERROR make the run fail; XPASS is reported but does not.
PASS, FAIL, ERROR, XFAIL, XPASS, NA, EXEC_ONLY = "pass", "FAIL", "ERROR", "xfail", "XPASS", "n/a", "exec-only"
FAILING = (FAIL, ERROR)


class ExpectationError(ValueError):
    pass


@dataclass(frozen=True)
class Expectation:
    """`RULE[@DRIVER][:VERSION[,VERSION...]]=reason`: the plugin is known not to implement this."""

    rule: str
    reason: str
    driver: str | None = None
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, known_rules: set[str]) -> "Expectation":
        key, sep, reason = text.partition("=")
        if not sep or not reason.strip():
            raise ExpectationError(f"--expect-unimplemented {text!r}: expected RULE[@DRIVER][:VERSIONS]=reason")
        key, _, versions = key.partition(":")
        name, _, driver = key.partition("@")
        if name not in known_rules:
            raise ExpectationError(f"--expect-unimplemented: unknown rule {name!r}")
        if driver and driver not in ("exec", "cnitool"):
            raise ExpectationError(f"--expect-unimplemented: unknown driver {driver!r}")
        vs = tuple(v for v in versions.split(",") if v)
        return cls(name, reason.strip(), driver or None, vs)

    def matches(self, rule: str, driver: str, version: str) -> bool:
        return (
            rule == self.rule
            and (self.driver is None or self.driver == driver)
            and (not self.versions or version in self.versions)
        )


@dataclass
class RuleResult:
    rule: str
    section: str
    version: str
    driver: str
    status: str
    message: str = ""
    expected_reason: str = ""
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "section": self.section,
            "version": self.version,
            "driver": self.driver,
            "status": self.status,
            "message": self.message,
            "expected_reason": self.expected_reason,
            "notes": self.notes,
            "duration": round(self.duration, 3),
        }


@dataclass
class Suite:
    conf: NetworkConfig
    options: SuiteOptions
    versions: list[str]
    drivers: list[str]
    cnitool: str | None = None
    expectations: list[Expectation] = field(default_factory=list)
    rule_names: list[str] | None = None

    def rules(self) -> list[Rule]:
        rules = all_rules()
        if self.rule_names is not None:
            rules = [r for r in rules if r.name in self.rule_names]
        return rules

    def _runtime(self, driver: str, conf: NetworkConfig, workdir: str) -> Runtime:
        kwargs = dict(
            cni_args=self.options.cni_args,
            capability_args=self.options.capability_args,
            timeout=self.options.timeout,
        )
        if driver == "exec":
            return ExecRuntime(conf, self.options.cni_path, **kwargs)  # type: ignore[arg-type]
        assert self.cnitool is not None
        return CnitoolRuntime(conf, self.options.cni_path, cnitool=self.cnitool, workdir=workdir, **kwargs)  # type: ignore[arg-type]

    def run(self, progress: Callable[[RuleResult], None] | None = None) -> list[RuleResult]:
        results: list[RuleResult] = []
        workdir = tempfile.mkdtemp(prefix="cnf-suite-")
        try:
            for version in self.versions:
                vconf = self.conf.for_version(version)
                runtimes = {d: self._runtime(d, vconf, workdir) for d in self.drivers}
                for rule in self.rules():
                    for driver in self.drivers:
                        res = self._run_one(rule, version, driver, runtimes[driver])
                        results.append(res)
                        if progress:
                            progress(res)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return results

    def _run_one(self, rule: Rule, version: str, driver: str, runtime: Runtime) -> RuleResult:
        res = RuleResult(rule.name, rule.section, version, driver, PASS)
        if driver not in rule.drivers:
            res.status, res.message = EXEC_ONLY, rule.exec_only_why or ""
            return res
        if not rule.applies_to(version):
            res.status, res.message = NA, f"introduced in {rule.min_version}"
            return res
        ctx = Context(rule, version, runtime, self.options)
        start = time.monotonic()
        try:
            rule.func(ctx)
        except RuleFailed as exc:
            res.status, res.message = FAIL, str(exc)
        except (RuleNotApplicable, NotSupported) as exc:
            res.status, res.message = NA, str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash in a rule is reported, not fatal
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            res.status = ERROR
            res.message = f"{type(exc).__name__}: {exc} (at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"
        finally:
            res.notes = ctx.notes + ctx.cleanup()
            res.duration = time.monotonic() - start
        for exp in self.expectations:
            if exp.matches(rule.name, driver, version):
                res.expected_reason = exp.reason
                if res.status in FAILING:
                    res.status = XFAIL
                elif res.status == PASS:
                    res.status = XPASS
                break
        return res
