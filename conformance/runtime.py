"""The runtime side of the protocol: what a container runtime does with a network configuration.

Two drivers implement `Runtime`:
- `ExecRuntime` (here) executes the plugins itself: CNI_* environment + stdin, chaining results
  through `prevResult` as SPEC.md section 3 describes, caching the final ADD result for CHECK/DEL.
- `CnitoolRuntime` (cnitool_runtime.py) goes through libcni by way of cnitool.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from conformance import invoke
from conformance.invoke import Call
from conformance.netconf import NetworkConfig
from conformance.netns import Netns, unique_name
from conformance.spec import GC_VALID_ATTACHMENTS_KEY, supports_check, supports_gc_status


class NotSupported(Exception):
    """The driver cannot express this operation (the rule is exec-only for that part)."""


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str
    netns: Netns = field(compare=False)

    @property
    def netns_path(self) -> str:
        return self.netns.path


@dataclass
class Outcome:
    ok: bool
    calls: list[Call]
    result: dict[str, Any] | None = None
    error: str = ""

    @property
    def last(self) -> Call | None:
        return self.calls[-1] if self.calls else None

    def describe(self) -> str:
        if self.error and not self.calls:
            return self.error
        text = "; ".join(c.describe() for c in self.calls[-2:])
        return f"{self.error}: {text}" if self.error else text


# Sentinel: "use the attachment's own namespace path".
ATTACHMENT_NETNS = object()


class Runtime(abc.ABC):
    driver: str = ""

    def __init__(
        self,
        conf: NetworkConfig,
        cni_path: list[str],
        *,
        cni_args: str | None = None,
        capability_args: dict[str, Any] | None = None,
        timeout: float = invoke.DEFAULT_TIMEOUT,
    ) -> None:
        self.conf = conf
        self.cni_path = cni_path
        self.cni_args = cni_args
        self.capability_args = capability_args or {}
        self.timeout = timeout

    @property
    def version(self) -> str:
        return self.conf.version

    @abc.abstractmethod
    def with_conf(self, conf: NetworkConfig) -> "Runtime": ...

    @abc.abstractmethod
    def attachment(self, netns: Netns, ifname: str = "eth0", container_id: str | None = None) -> Attachment: ...

    @abc.abstractmethod
    def add(self, att: Attachment) -> Outcome: ...

    @abc.abstractmethod
    def check(self, att: Attachment) -> Outcome: ...

    @abc.abstractmethod
    def delete(self, att: Attachment, *, netns_path: Any = ATTACHMENT_NETNS, prev_result: bool = True) -> Outcome: ...

    @abc.abstractmethod
    def gc(self, valid: list[Attachment]) -> Outcome: ...

    @abc.abstractmethod
    def status(self) -> Outcome: ...

    @abc.abstractmethod
    def forget(self, att: Attachment) -> None:
        """Drop any cached state for the attachment (cleanup after a failed DEL)."""


class ExecRuntime(Runtime):
    driver = "exec"

    def __init__(self, conf: NetworkConfig, cni_path: list[str], **kwargs: Any) -> None:
        super().__init__(conf, cni_path, **kwargs)
        self._kwargs = kwargs
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}

    def with_conf(self, conf: NetworkConfig) -> "ExecRuntime":
        return ExecRuntime(conf, self.cni_path, **self._kwargs)

    def attachment(self, netns: Netns, ifname: str = "eth0", container_id: str | None = None) -> Attachment:
        return Attachment(container_id or unique_name("cnf"), ifname, netns)

    # -- plumbing ----------------------------------------------------------------------------
    def plugin_binary(self, index: int = 0) -> str:
        return invoke.find_plugin(self.conf.plugin_types[index], self.cni_path)

    def env(
        self, command: str | None, att: Attachment | None = None, netns_path: Any = ATTACHMENT_NETNS
    ) -> dict[str, str | None]:
        env: dict[str, str | None] = {"CNI_COMMAND": command, "CNI_PATH": ":".join(self.cni_path)}
        if att is not None:
            env["CNI_CONTAINERID"] = att.container_id
            env["CNI_IFNAME"] = att.ifname
            env["CNI_NETNS"] = att.netns_path if netns_path is ATTACHMENT_NETNS else netns_path
            if self.cni_args:
                env["CNI_ARGS"] = self.cni_args
        return env

    def exec_plugin(self, index: int, env: dict[str, str | None], stdin: bytes) -> Call:
        return invoke.run([self.plugin_binary(index)], env, stdin, timeout=self.timeout)

    def _request(self, index: int, prev: dict[str, Any] | None) -> bytes:
        return self.conf.plugin_request(index, prev_result=prev, capability_args=self.capability_args)

    def cached_result(self, att: Attachment) -> dict[str, Any] | None:
        return self._cache.get((att.container_id, att.ifname))

    # -- operations --------------------------------------------------------------------------
    def add(self, att: Attachment) -> Outcome:
        calls: list[Call] = []
        prev: dict[str, Any] | None = None
        for i in range(len(self.conf.plugins)):
            try:
                call = self.exec_plugin(i, self.env("ADD", att), self._request(i, prev))
            except invoke.PluginNotFound as exc:
                return Outcome(False, calls, error=str(exc))
            calls.append(call)
            if not call.ok:
                return Outcome(False, calls, error=f"ADD of plugin {i} failed")
            result = call.stdout_json_or_none()
            if not isinstance(result, dict):
                return Outcome(False, calls, error=f"ADD of plugin {i} printed no JSON result object")
            prev = result
        assert prev is not None
        self._cache[(att.container_id, att.ifname)] = prev
        return Outcome(True, calls, result=prev)

    def check(self, att: Attachment) -> Outcome:
        if not supports_check(self.version):
            raise NotSupported(f"CHECK does not exist in {self.version}")
        if self.conf.disable_check:
            return Outcome(True, [])
        prev = self.cached_result(att)
        if prev is None:
            return Outcome(False, [], error="no cached ADD result to send as prevResult")
        calls: list[Call] = []
        for i in range(len(self.conf.plugins)):
            call = self.exec_plugin(i, self.env("CHECK", att), self._request(i, prev))
            calls.append(call)
            if not call.ok:
                return Outcome(False, calls, error=f"CHECK of plugin {i} failed")
        return Outcome(True, calls)

    def delete(self, att: Attachment, *, netns_path: Any = ATTACHMENT_NETNS, prev_result: bool = True) -> Outcome:
        prev = self.cached_result(att) if (prev_result and supports_check(self.version)) else None
        calls: list[Call] = []
        for i in reversed(range(len(self.conf.plugins))):
            call = self.exec_plugin(i, self.env("DEL", att, netns_path), self._request(i, prev))
            calls.append(call)
            if not call.ok:
                return Outcome(False, calls, error=f"DEL of plugin {i} failed")
        self._cache.pop((att.container_id, att.ifname), None)
        return Outcome(True, calls)

    def gc(self, valid: list[Attachment]) -> Outcome:
        if not supports_gc_status(self.version):
            raise NotSupported(f"GC does not exist in {self.version}")
        if self.conf.disable_gc:
            return Outcome(True, [])
        attachments = [{"containerID": a.container_id, "ifname": a.ifname} for a in valid]
        calls: list[Call] = []
        failed = []
        for i in range(len(self.conf.plugins)):
            stdin = self.conf.plugin_request(i, extra={GC_VALID_ATTACHMENTS_KEY: attachments})
            call = self.exec_plugin(i, self.env("GC"), stdin)
            calls.append(call)
            if not call.ok:
                failed.append(i)  # GC carries on past errors (SPEC.md section 3)
        return Outcome(not failed, calls, error=f"GC failed for plugins {failed}" if failed else "")

    def status(self) -> Outcome:
        if not supports_gc_status(self.version):
            raise NotSupported(f"STATUS does not exist in {self.version}")
        calls: list[Call] = []
        for i in range(len(self.conf.plugins)):
            call = self.exec_plugin(i, self.env("STATUS"), self.conf.plugin_request(i))
            calls.append(call)
            if not call.ok:
                return Outcome(False, calls, error=f"STATUS of plugin {i} failed")
        return Outcome(True, calls)

    def forget(self, att: Attachment) -> None:
        self._cache.pop((att.container_id, att.ifname), None)
