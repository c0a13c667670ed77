"""Unit tests of the suite's pure logic: result schemas, config derivation, expectations."""
from __future__ import annotations

import json

import pytest

from conformance.netconf import ConfigError, NetworkConfig
from conformance.results import add_result_problems, error_problems, version_problems
from conformance.runner import Expectation, ExpectationError

NS = "/run/netns/cnf-x"


def _result(version: str, **over: object) -> dict[str, object]:
    ip: dict[str, object] = {"address": "10.9.0.2/24", "gateway": "10.9.0.1", "interface": 1}
    if not version.startswith("1."):
        ip["version"] = "4"
    r: dict[str, object] = {
        "cniVersion": version,
        "interfaces": [{"name": "br0", "mac": "96:8c:0d:4f:6c:cf"}, {"name": "eth0", "mac": "16:a9:df:f5:d5:22", "sandbox": NS}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }
    r.update(over)
    return r


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_valid_results(version: str) -> None:
    assert add_result_problems(_result(version), version, "eth0", NS) == []


def test_version_field_rules() -> None:
    legacy = _result("1.0.0")
    legacy["ips"][0]["version"] = "4"  # type: ignore[index]
    assert any("ips.0.version" in p for p in add_result_problems(legacy, "1.0.0", "eth0", NS))
    missing = _result("0.4.0")
    del missing["ips"][0]["version"]  # type: ignore[index]
    assert any("ips.0.version" in p for p in add_result_problems(missing, "0.4.0", "eth0", NS))
    wrong_family = _result("0.3.1")
    wrong_family["ips"][0]["version"] = "6"  # type: ignore[index]
    assert add_result_problems(wrong_family, "0.3.1", "eth0", NS)


def test_11_fields_only_in_11() -> None:
    r = _result("1.1.0")
    r["interfaces"][1]["mtu"] = 1500  # type: ignore[index]
    r["routes"][0]["table"] = 100  # type: ignore[index]
    assert add_result_problems(r, "1.1.0", "eth0", NS) == []
    r["cniVersion"] = "1.0.0"
    assert len(add_result_problems(r, "1.0.0", "eth0", NS)) == 2


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"cniVersion": "1.0.0"}, "cniVersion"),
        ({"ips": [{"address": "10.9.0.2", "interface": 1}]}, "CIDR"),
        ({"ips": [{"address": "10.9.0.2/24", "interface": 5}]}, "index 5"),
        ({"ips": [{"address": "10.9.0.2/24", "interface": "1"}]}, "integer"),
        ({"ips": [{"address": "10.9.0.2/24", "interface": 0}]}, "no ips entry"),
        ({"interfaces": [{"name": "eth0"}]}, "CNI_IFNAME"),
        ({"interfaces": [{"name": "eth0", "sandbox": "/other"}], "ips": [{"address": "10.9.0.2/24", "interface": 0}]}, "sandbox"),
        ({"routes": [{"dst": "default"}]}, "CIDR"),
        ({"dns": {"nameservers": ["not-an-ip"]}}, "nameservers"),
        ({"extra": 1}, "extra"),
    ],
)
def test_result_problems(change: dict[str, object], fragment: str) -> None:
    problems = add_result_problems(_result("1.1.0", **change), "1.1.0", "eth0", NS)
    assert any(fragment in p for p in problems), problems


def test_error_and_version_shapes() -> None:
    assert error_problems({"code": 7, "msg": "bad", "details": "x"}) == []
    assert error_problems({"cniVersion": "1.1.0", "code": 4, "msg": "m"}) == []
    assert error_problems({"code": "7", "msg": "bad"})
    assert error_problems({"code": 0, "msg": "bad"})
    assert error_problems({"code": 7})
    assert error_problems([1])
    ok = {"cniVersion": "0.4.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}
    assert version_problems(ok, "0.4.0", ["0.4.0"]) == []
    assert version_problems(ok, "1.0.0", ["1.1.0"])


def test_single_conf_is_upconverted_and_version_pinned() -> None:
    conf = NetworkConfig.from_dict({"cniVersion": "0.3.1", "cniVersions": ["1.1.0"], "name": "n", "type": "bridge", "x": 1})
    assert conf.source_format == "conf" and conf.plugin_types == ["bridge"]
    v = conf.for_version("1.1.0")
    assert v.version == "1.1.0" and "cniVersions" not in v.as_dict()
    req = json.loads(v.plugin_request(0, prev_result={"cniVersion": "1.1.0"}))
    assert req["cniVersion"] == "1.1.0" and req["name"] == "n" and req["x"] == 1 and "prevResult" in req
    assert conf.version == "0.3.1"  # derivations never mutate the original


def test_runtime_config_follows_capabilities() -> None:
    conf = NetworkConfig.from_dict({"name": "n", "cniVersion": "1.0.0", "plugins": [
        {"type": "a", "capabilities": {"portMappings": True, "bandwidth": False}}, {"type": "b"}]})
    caps = {"portMappings": [{"hostPort": 1}], "bandwidth": {}, "ips": ["10.0.0.1"]}
    assert json.loads(conf.plugin_request(0, capability_args=caps))["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert "runtimeConfig" not in json.loads(conf.plugin_request(1, capability_args=caps))
    chained = conf.with_plugin({"type": "tuning"}).renamed("m")
    assert chained.plugin_types == ["a", "b", "tuning"] and chained.name == "m" and conf.name == "n"


@pytest.mark.parametrize("bad", [{"plugins": []}, {"name": "n"}, [], {"name": "", "type": "x"}])
def test_bad_configs(bad: object) -> None:
    with pytest.raises(ConfigError):
        NetworkConfig.from_dict(bad)


def test_expectation_parsing() -> None:
    known = {"gc", "version-output"}
    e = Expectation.parse("version-output:0.3.1,0.4.0=reason here", known)
    assert e.matches("version-output", "exec", "0.3.1") and not e.matches("version-output", "exec", "1.1.0")
    g = Expectation.parse("gc@exec=no GC", known)
    assert g.matches("gc", "exec", "1.1.0") and not g.matches("gc", "cnitool", "1.1.0")
    for bad in ("gc", "gc=", "nope=x", "gc@lib=x"):
        with pytest.raises(ExpectationError):
            Expectation.parse(bad, known)
