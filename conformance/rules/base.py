"""Rule registry and the per-run context a rule works in."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from conformance.netns import Netns, unique_name
from conformance.runtime import ATTACHMENT_NETNS, Attachment, ExecRuntime, Outcome, Runtime
from conformance.spec import at_least

DRIVERS = ("exec", "cnitool")


class RuleFailed(Exception):
    """The plugin violated the rule."""


class RuleNotApplicable(Exception):
    """The rule does not apply to this version/driver/configuration."""


@dataclass(frozen=True)
class SuiteOptions:
    cni_path: list[str]
    chain_plugin: dict[str, Any]
    cni_args: str | None = None
    capability_args: dict[str, Any] | None = None
    timeout: float = 60.0
    netns_prefix: str = "cnf"


@dataclass(frozen=True)
class Rule:
    name: str
    section: str
    summary: str
    func: Callable[["Context"], None]
    drivers: tuple[str, ...] = DRIVERS
    min_version: str = "0.3.1"
    exec_only_why: str | None = None

    def applies_to(self, version: str) -> bool:
        return at_least(version, self.min_version)


_REGISTRY: list[Rule] = []


def rule(
    name: str,
    section: str,
    summary: str,
    *,
    exec_only: str | None = None,
    min_version: str = "0.3.1",
) -> Callable[[Callable[["Context"], None]], Callable[["Context"], None]]:
    """Register a rule. `exec_only` is the reason it cannot go through cnitool/libcni."""

    def deco(fn: Callable[["Context"], None]) -> Callable[["Context"], None]:
        drivers = ("exec",) if exec_only else DRIVERS
        _REGISTRY.append(Rule(name, section, summary, fn, drivers, min_version, exec_only))
        return fn

    return deco


def registered_rules() -> list[Rule]:
    return list(_REGISTRY)


@dataclass
class Context:
    """What a rule gets: one version, one driver, and helpers that clean up after it."""

    rule: Rule
    version: str
    runtime: Runtime
    options: SuiteOptions
    notes: list[str] = field(default_factory=list)
    _namespaces: list[Netns] = field(default_factory=list)
    _live: list[tuple[Runtime, Attachment]] = field(default_factory=list)

    @property
    def driver(self) -> str:
        return self.runtime.driver

    @property
    def exec(self) -> ExecRuntime:
        if not isinstance(self.runtime, ExecRuntime):
            raise RuleNotApplicable("exec driver only")
        return self.runtime

    # -- assertions --------------------------------------------------------------------------
    def fail(self, message: str) -> None:
        raise RuleFailed(message)

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise RuleFailed(message)

    def note(self, message: str) -> None:
        self.notes.append(message)

    # -- resources ---------------------------------------------------------------------------
    def netns(self) -> Netns:
        ns = Netns.create(unique_name(self.options.netns_prefix))
        self._namespaces.append(ns)
        return ns

    def attachment(
        self, netns: Netns | None = None, ifname: str = "eth0", runtime: Runtime | None = None
    ) -> Attachment:
        rt = runtime or self.runtime
        return rt.attachment(netns or self.netns(), ifname)

    def add(self, att: Attachment, runtime: Runtime | None = None, what: str = "ADD") -> Outcome:
        """ADD that must succeed; the attachment is DELeted during cleanup if still live."""
        rt = runtime or self.runtime
        self._track(rt, att)
        out = rt.add(att)
        self.expect(out.ok, f"{what} failed: {out.describe()}")
        return out

    def try_add(self, att: Attachment, runtime: Runtime | None = None) -> Outcome:
        rt = runtime or self.runtime
        self._track(rt, att)
        return rt.add(att)

    def delete(
        self, att: Attachment, runtime: Runtime | None = None, *, netns_path: Any = ATTACHMENT_NETNS,
        prev_result: bool = True,
    ) -> Outcome:
        rt = runtime or self.runtime
        out = rt.delete(att, netns_path=netns_path, prev_result=prev_result)
        if out.ok:
            self._live = [(r, a) for r, a in self._live if not (r is rt and a == att)]
        return out

    def _track(self, rt: Runtime, att: Attachment) -> None:
        if not any(r is rt and a == att for r, a in self._live):
            self._live.append((rt, att))

    def cleanup(self) -> list[str]:
        """DEL every attachment the rule ADDed, then remove its namespaces. Returns problems."""
        problems: list[str] = []
        for rt, att in reversed(self._live):
            try:
                out = rt.delete(att)
                if not out.ok:
                    problems.append(f"cleanup DEL {att.container_id}/{att.ifname}: {out.describe()}")
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                problems.append(f"cleanup DEL {att.container_id}/{att.ifname}: {exc}")
            rt.forget(att)
        self._live.clear()
        for ns in self._namespaces:
            ns.delete()
        self._namespaces.clear()
        return problems
