"""The libcni driver: every operation goes through `cnitool` (containernetworking/cni >= v1.2).

cnitool reads the network list named on its command line from NETCONFPATH, finds plugins in
CNI_PATH, takes the interface name from CNI_IFNAME (default eth0), extra args from CNI_ARGS and
capability args (JSON) from CAP_ARGS. It derives the container ID from the namespace path
("cnitool-" + the first 10 bytes of sha512(abs path) in hex) and caches ADD results in libcni's
cache dir (/var/lib/cni/results), which is what CHECK and DEL send as prevResult. `cnitool gc`
passes no valid attachments: libcni DELs every cached attachment of the network, then sends GC.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from conformance import invoke
from conformance.netconf import NetworkConfig
from conformance.netns import Netns
from conformance.runtime import ATTACHMENT_NETNS, Attachment, NotSupported, Outcome, Runtime
from conformance.spec import supports_check, supports_gc_status

LIBCNI_CACHE_DIR = Path("/var/lib/cni")


def cnitool_container_id(netns_path: str) -> str:
    digest = hashlib.sha512(os.path.abspath(netns_path).encode()).digest()
    return "cnitool-" + digest[:10].hex()


class CnitoolRuntime(Runtime):
    driver = "cnitool"

    def __init__(self, conf: NetworkConfig, cni_path: list[str], *, cnitool: str, workdir: str, **kwargs: Any) -> None:
        super().__init__(conf, cni_path, **kwargs)
        self.cnitool = cnitool
        self._workdir = workdir
        self._kwargs = kwargs
        self.netconf_dir = tempfile.mkdtemp(prefix="netconf-", dir=workdir)
        Path(self.netconf_dir, f"{conf.name}.conflist").write_text(conf.conflist_json())

    def with_conf(self, conf: NetworkConfig) -> "CnitoolRuntime":
        return CnitoolRuntime(conf, self.cni_path, cnitool=self.cnitool, workdir=self._workdir, **self._kwargs)

    def attachment(self, netns: Netns, ifname: str = "eth0", container_id: str | None = None) -> Attachment:
        if container_id is not None:
            raise NotSupported("cnitool derives the container ID from the netns path")
        return Attachment(cnitool_container_id(netns.path), ifname, netns)

    def _run(self, verb: str, netns_path: str, ifname: str = "eth0") -> invoke.Call:
        env: dict[str, str | None] = {
            "NETCONFPATH": self.netconf_dir,
            "CNI_PATH": ":".join(self.cni_path),
            "CNI_IFNAME": ifname,
        }
        if self.cni_args:
            env["CNI_ARGS"] = self.cni_args
        if self.capability_args:
            env["CAP_ARGS"] = json.dumps(self.capability_args)
        argv = [self.cnitool, verb, self.conf.name, netns_path]
        return invoke.run(argv, env, b"", timeout=self.timeout, is_plugin=False)

    def add(self, att: Attachment) -> Outcome:
        call = self._run("add", att.netns_path, att.ifname)
        if not call.ok:
            return Outcome(False, [call], error="cnitool add failed")
        result = call.stdout_json_or_none()
        if not isinstance(result, dict):
            return Outcome(False, [call], error="cnitool add printed no JSON result object")
        return Outcome(True, [call], result=result)

    def check(self, att: Attachment) -> Outcome:
        if not supports_check(self.version):
            raise NotSupported(f"CHECK does not exist in {self.version}")
        call = self._run("check", att.netns_path, att.ifname)
        return Outcome(call.ok, [call], error="" if call.ok else "cnitool check failed")

    def delete(self, att: Attachment, *, netns_path: Any = ATTACHMENT_NETNS, prev_result: bool = True) -> Outcome:
        if netns_path is not ATTACHMENT_NETNS and netns_path != att.netns_path:
            raise NotSupported("cnitool always passes the namespace path it derived the container ID from")
        if not prev_result and supports_check(self.version):
            raise NotSupported("libcni always sends the cached result as prevResult on DEL")
        call = self._run("del", att.netns_path, att.ifname)
        return Outcome(call.ok, [call], error="" if call.ok else "cnitool del failed")

    def gc(self, valid: list[Attachment]) -> Outcome:
        if not supports_gc_status(self.version):
            raise NotSupported(f"GC does not exist in {self.version}")
        if valid:
            raise NotSupported("cnitool gc cannot pass valid attachments")
        call = self._run("gc", "/run/netns/cnitool-gc-unused")
        return Outcome(call.ok, [call], error="" if call.ok else "cnitool gc failed")

    def status(self) -> Outcome:
        if not supports_gc_status(self.version):
            raise NotSupported(f"STATUS does not exist in {self.version}")
        call = self._run("status", "/run/netns/cnitool-status-unused")
        return Outcome(call.ok, [call], error="" if call.ok else "cnitool status failed")

    def cache_file(self, att: Attachment) -> Path:
        return LIBCNI_CACHE_DIR / "results" / f"{self.conf.name}-{att.container_id}-{att.ifname}"

    def forget(self, att: Attachment) -> None:
        try:
            self.cache_file(att).unlink()
        except FileNotFoundError:
            pass
