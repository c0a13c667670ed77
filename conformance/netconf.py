"""Network configuration handling: load a .conf or .conflist, pin its version, derive plugin requests.

The request derivation follows SPEC.md section 3 ("Deriving request configuration from plugin
configuration") the way libcni does it: the plugin object is passed through unaltered except for
`name`, `cniVersion`, `prevResult` and `runtimeConfig` (capability arguments filtered through the
plugin's `capabilities`).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(Exception):
    """The configuration file given to the suite is unusable."""


class _ConfList(BaseModel):
    """Edge model: the parts of a network configuration list the suite relies on."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    cniVersion: str | None = None
    plugins: list[dict[str, Any]] = Field(min_length=1)


class _SingleConf(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    cniVersion: str | None = None


class NetworkConfig:
    """An immutable network configuration list (a single .conf is up-converted like libcni does)."""

    def __init__(self, raw: dict[str, Any], source_format: str = "conflist") -> None:
        self._raw = raw
        self.source_format = source_format

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "NetworkConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "NetworkConfig":
        if not isinstance(data, dict):
            raise ConfigError("network configuration must be a JSON object")
        try:
            if "plugins" in data:
                _ConfList.model_validate(data)
                return cls(copy.deepcopy(data), "conflist")
            single = _SingleConf.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid network configuration: {exc}") from exc
        plugin = copy.deepcopy(data)
        raw = {"name": single.name, "cniVersion": single.cniVersion, "plugins": [plugin]}
        return cls(raw, "conf")

    # -- views -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self._raw["name"])

    @property
    def version(self) -> str:
        return str(self._raw.get("cniVersion") or "")

    @property
    def plugins(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._raw["plugins"])

    @property
    def plugin_types(self) -> list[str]:
        return [str(p.get("type", "")) for p in self._raw["plugins"]]

    @property
    def disable_check(self) -> bool:
        return _truthy(self._raw.get("disableCheck"))

    @property
    def disable_gc(self) -> bool:
        return _truthy(self._raw.get("disableGC"))

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._raw)

    def conflist_json(self) -> str:
        return json.dumps(self._raw, indent=2)

    # -- derivations -------------------------------------------------------------------------
    def for_version(self, version: str) -> "NetworkConfig":
        """Pin the configuration to one protocol version (drops `cniVersions`, which would
        otherwise make libcni pick the highest listed version)."""
        raw = self.as_dict()
        raw["cniVersion"] = version
        raw.pop("cniVersions", None)
        for plugin in raw["plugins"]:
            if "cniVersion" in plugin:
                plugin["cniVersion"] = version
        return NetworkConfig(raw, self.source_format)

    def renamed(self, name: str) -> "NetworkConfig":
        raw = self.as_dict()
        raw["name"] = name
        for plugin in raw["plugins"]:
            if "name" in plugin:
                plugin["name"] = name
        return NetworkConfig(raw, self.source_format)

    def with_plugin(self, plugin: dict[str, Any]) -> "NetworkConfig":
        raw = self.as_dict()
        raw["plugins"].append(copy.deepcopy(plugin))
        return NetworkConfig(raw, "conflist")

    def plugin_request(
        self,
        index: int,
        *,
        prev_result: dict[str, Any] | None = None,
        capability_args: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        """The stdin for plugin `index` of this list (libcni's buildOneConfig/injectRuntimeConfig)."""
        conf = copy.deepcopy(self._raw["plugins"][index])
        conf["name"] = self.name
        conf["cniVersion"] = self.version
        if prev_result is not None:
            conf["prevResult"] = copy.deepcopy(prev_result)
        if capability_args:
            caps = conf.get("capabilities") or {}
            runtime_config = {k: v for k, v in capability_args.items() if caps.get(k) is True}
            if runtime_config:
                conf["runtimeConfig"] = runtime_config
        if extra:
            conf.update(copy.deepcopy(extra))
        return json.dumps(conf).encode()


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"
    return False
