"""The light IPAM values (ipam.values, ipam.pools) against the pydantic models
(datastore.models.ipam / ippool): same documents accepted, same stored JSON
byte for byte, same pools; and the CNI ADD/CHECK/DEL path imports no pydantic."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from datastore.models import ipam as models
from ipam import blocks as blk
from ipam import values
from ipam.pools import Pool
from tests.support.cni_exec import REPO

BLOCK = {
    "cidr": "10.244.1.0/29",
    "affinity": "host:node-1",
    "affinity_claim_time": "2024-05-01T10:00:00.123456Z",
    "allocations": [0, None, 1, 0, None, None, None, None],
    "unallocated": [1, 4, 5, 6, 7],
    "attributes": [
        {"handle_id": "k8s-pod-network.abc", "secondary": {"node": "node-1", "pod": "p", "namespace": "default"}},
        {"handle_id": "ipip-tunnel-addr-node-1", "secondary": {"node": "node-1", "type": "ipipTunnelAddress"}},
    ],
    "sequenceNumber": 1714557600000000000,
    "sequenceNumberForAllocation": {"0": 1714557600000000001, "2": 5, "3": 7},
    "deleted": False,
}


def _with(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BLOCK)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


_DROP = object()

BLOCKS = [
    BLOCK,
    _with(affinity=None),
    _with(affinity=_DROP, affinity_claim_time=_DROP),
    _with(affinity="virtual:vm-1"),
    _with(sequenceNumberForAllocation=None, attributes=None),
    _with(sequenceNumberForAllocation=_DROP, sequenceNumber=_DROP, deleted=_DROP, attributes=_DROP),
    _with(deleted=True, hostAffinity="node-1"),
    _with(futureField={"x": None, "y": [1, 2]}, nullExtra=None),
    _with(attributes=[{"handle_id": "h", "secondary": None, "alternate": {"pod": "old"},
                       "releasedAt": "2024-05-01T10:00:00Z", "newer": 1, "gone": None},
                      {"handle_id": None, "secondary": {}}]),
    _with(cidr="fd00:10:244::/125", allocations=[None] * 8, unallocated=list(range(8)), attributes=[],
          sequenceNumberForAllocation={}),
    _with(cidr="10.0.0.7", allocations=[None], unallocated=[0], attributes=[], sequenceNumberForAllocation={}),
    _with(cidr="10.244.1.0/255.255.255.248"),
]
PLAIN_BLOCKS = len(BLOCKS)
BLOCKS += [
    # Unusual forms the model normalises (coercions, Python names): same result either way.
    _with(sequenceNumber="42"),
    _with(sequence_number=9, sequenceNumber=_DROP),
    _with(allocations=[0, None, 1.0, 0, None, None, None, None]),
    _with(unallocated=[True, 4, 5, 6, 7]),
    _with(deleted="false"),
]

BAD_BLOCKS = [
    _with(allocations=[None]),
    _with(affinity="node-1"),
    _with(affinity="host:"),
    _with(cidr="10.244.1.1/29"),
    _with(cidr="not-a-cidr"),
    _with(cidr=_DROP),
    _with(unallocated=[99]),
    _with(sequenceNumber=-1),
    _with(attributes=[{"handle_id": 5}]),
    _with(attributes=[{"secondary": {"a": 1}}]),
    _with(allocations="none"),
    "not a block",
    [BLOCK],
]


@pytest.mark.parametrize("doc", BLOCKS, ids=range(len(BLOCKS)))
def test_block_round_trip_is_byte_identical(doc: dict[str, Any]) -> None:
    ref = models.AllocationBlock.from_dict(copy.deepcopy(doc))
    light = values.AllocationBlock.from_dict(copy.deepcopy(doc))
    assert light.to_json() == ref.to_json()
    assert json.dumps(light.to_dict()) == json.dumps(ref.to_dict())
    assert light == ref and ref == light
    # ...also after the same changes (the allocator's: assign, release, bump).
    for block in (ref, light):
        if blk.free_count(block):
            blk.auto_assign(block, 1, "k8s-pod-network.new", {"node": "n"})
        blk.release_handle(block, "ipip-tunnel-addr-node-1")
        blk.bump_sequence(block)
    assert light.to_json() == ref.to_json()
    assert values.AllocationBlock.from_json(light.to_json()) == light


@pytest.mark.parametrize("doc", BAD_BLOCKS, ids=range(len(BAD_BLOCKS)))
def test_block_rejected_as_before(doc: Any) -> None:
    with pytest.raises(ValidationError) as ref:
        models.AllocationBlock.from_dict(copy.deepcopy(doc))
    with pytest.raises(ValidationError) as light:
        values.AllocationBlock.from_dict(copy.deepcopy(doc))
    assert str(light.value) == str(ref.value)


def test_new_block_matches_the_model() -> None:
    for cidr, aff in (("10.1.0.0/26", "host:n1"), ("fd00::/122", None)):
        ref = models.AllocationBlock.new(cidr, affinity=aff, claim_time="t", sequence_number=3)
        light = values.AllocationBlock.new(cidr, affinity=aff, claim_time="t", sequence_number=3)
        assert light.to_json() == ref.to_json()
    with pytest.raises(ValueError):
        values.AllocationBlock.new("10.1.0.1/26")
    with pytest.raises(ValueError):
        values.AllocationBlock.new("10.1.0.0/26", affinity="n1")


HANDLES = [
    {"block": {"10.244.1.0/26": 2, "fd00:10:244::/122": 1}, "deleted": False},
    {"block": None, "deleted": False},
    {"block": {}},
    {},
    {"block": {"10.0.0.0/26": 1}, "deleted": True, "future": [1], "nothing": None},
    {"block": {"10.0.0.0/26": 1}, "handleID": "k8s-pod-network.x"},  # not stored (json:"-")
    {"block": {"10.0.0.0/26": "3"}},
    {"block": {"10.0.0.0/26": 1}, "handle_id": "k8s-pod-network.x"},
]
AFFINITIES = [
    {"state": "pending", "deleted": False},
    {"state": "pendingDeletion", "deleted": True},
    {"state": "confirmed"},
    {},
    {"state": "confirmed", "deleted": False, "extra": "x"},
]
CONFIGS = [
    {"strict_affinity": True, "auto_allocate_blocks": True, "maxBlocksPerHost": 4},
    {"auto_allocate_blocks": True},
    {},
    {"strict_affinity": False, "auto_allocate_blocks": False, "maxBlocksPerHost": 0},
    {"strict_affinity": True, "max_blocks_per_host": 3},
    {"strict_affinity": True, "later": {"a": 1}},
]
BAD_VALUES = [
    ("IPAMHandle", {"block": {"10.0.0.0/26": -1}}),
    ("IPAMHandle", {"block": [1]}),
    ("BlockAffinity", {"state": "claimed"}),
    ("BlockAffinity", {"state": "confirmed", "deleted": "maybe"}),
    ("IPAMConfigValue", {"maxBlocksPerHost": -2}),
]


@pytest.mark.parametrize("name,doc", [("IPAMHandle", d) for d in HANDLES] + [("BlockAffinity", d) for d in AFFINITIES]
                         + [("IPAMConfigValue", d) for d in CONFIGS])
def test_value_round_trip_is_byte_identical(name: str, doc: dict[str, Any]) -> None:
    ref = getattr(models, name).from_dict(copy.deepcopy(doc))
    light = getattr(values, name).from_dict(copy.deepcopy(doc))
    assert light.to_json() == ref.to_json()
    assert light == ref
    if name == "IPAMHandle":
        assert light.handle_id == ref.handle_id


@pytest.mark.parametrize("name,doc", BAD_VALUES)
def test_value_rejected_as_before(name: str, doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        getattr(models, name).from_dict(doc)
    with pytest.raises(ValidationError):
        getattr(values, name).from_dict(doc)


def test_affinity_from_json_and_handle_copy() -> None:
    assert values.BlockAffinity.from_json("").state == "confirmed"
    assert values.BlockAffinity.from_json('{"state":"pending","deleted":false}').to_json() == \
        models.BlockAffinity.from_json('{"state":"pending","deleted":false}').to_json()
    with pytest.raises(ValidationError):
        values.BlockAffinity.from_json("{not json")
    handle = values.IPAMHandle.from_dict({"block": {"10.0.0.0/26": 1}})
    handle.handle_id = "h"
    twin = copy.deepcopy(handle)
    twin.block["10.0.0.0/26"] = 5
    assert handle.block == {"10.0.0.0/26": 1} and twin.handle_id == "h"
    assert handle.to_dict() == {"block": {"10.0.0.0/26": 1}, "deleted": False}


# -- IPPools ----------------------------------------------------------------------


def _pool(spec: dict[str, Any], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                           "metadata": {"name": "pool-1", "uid": "u", "resourceVersion": "12",
                                        "creationTimestamp": "2024-05-01T10:00:00Z"},
                           "spec": spec}
    doc.update(top)
    return doc


POOLS = [
    _pool({"cidr": "10.244.0.0/16"}),
    _pool({"cidr": "10.244.0.0/16", "blockSize": 28, "ipipMode": "Always", "natOutgoing": True,
           "nodeSelector": "all()", "allowedUses": ["Workload"], "assignmentMode": "Manual"}),
    _pool({"cidr": "fd00:10:244::/48", "vxlanMode": "CrossSubnet", "blockSize": 0, "disabled": True,
           "disableBGPExport": False, "allowedUses": []}),
    _pool({"cidr": "10.9.0.0/24", "blockSize": 26, "disabled": True}),  # prefix > blockSize: fine when disabled
    _pool({"cidr": "10.9.0.0/24", "nodeSelector": "rack == 'a' && has(zone)", "namespaceSelector": "team in {'x'}"}),
    _pool({"cidr": "10.9.0.0/24", "nodeSelector": ""}),
    _pool({"cidr": "10.244.0.0/255.255.0.0"}),
    _pool({"cidr": "10.244.0.0/16"}, status={"x": 1}),
]
PLAIN_POOLS = len(POOLS)
POOLS += [
    # Not in the plain form: the model decides (and agrees).
    _pool({"cidr": "10.244.0.0/16", "blockSize": "27", "natOutgoing": "true"}),
    _pool({"cidr": "10.244.0.0/16", "block_size": 27}),
    _pool({"cidr": "10.244.0.0/16"}, metadata={"name": "pool-2", "labels": {"a": "b"}, "annotations": {"x": "y"},
                                               "generation": 3, "managedFields": [{"manager": "m"}]}),
    {"kind": "IPPool", "metadata": {"name": "no-api-version"}, "spec": {"cidr": "10.1.0.0/16"}},
]

BAD_POOLS = [
    _pool({"cidr": "10.244.0.1/16"}),
    _pool({"cidr": "10.244.0.0"}),
    _pool({"cidr": "169.254.0.0/24"}),
    _pool({"cidr": "fe80::/64"}),
    _pool({"cidr": "fd00::/48", "ipipMode": "Always"}),
    _pool({"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}),
    _pool({"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"}),
    _pool({"cidr": "10.0.0.0/16", "blockSize": 19}),
    _pool({"cidr": "10.0.0.0/24", "blockSize": 20}),
    _pool({"cidr": "10.0.0.0/16", "nodeSelector": "rack == "}),
    _pool({"cidr": "10.0.0.0/16", "allowedUses": ["Workload", "Workload"]}),
    _pool({"cidr": "10.0.0.0/16", "allowedUses": ["Pods"]}),
    _pool({"cidr": "10.0.0.0/16", "assignmentMode": "Sometimes"}),
    _pool({"cidr": "10.0.0.0/16", "unknownField": 1}),
    _pool({"cidr": "10.0.0.0/16"}, apiVersion="projectcalico.org/v2"),
    _pool({"cidr": "10.0.0.0/16"}, kind="IPPoolz"),
    _pool({"cidr": "10.0.0.0/16"}, metadata={"name": "Bad_Name"}),
    _pool({"cidr": "10.0.0.0/16"}, metadata={"name": "p", "namespace": "default"}),
    _pool({"cidr": "10.0.0.0/16"}, extra=1),
    _pool({"blockSize": 26}),
]


def _reference_pool(doc: dict[str, Any]) -> Pool:
    from datastore.models.ippool import DEFAULT_BLOCK_SIZE, IPPool

    pool = IPPool.model_validate(copy.deepcopy(doc))
    spec = pool.spec
    return Pool(name=pool.metadata.name, cidr=spec.cidr,
                block_size=spec.block_size or DEFAULT_BLOCK_SIZE[spec.network.version],
                disabled=bool(spec.disabled), node_selector=spec.node_selector or "all()",
                namespace_selector=spec.namespace_selector, allowed_uses=tuple(spec.allowed_uses),
                assignment_mode=spec.assignment_mode)


@pytest.mark.parametrize("doc", POOLS, ids=range(len(POOLS)))
def test_pool_read_as_the_model_reads_it(doc: dict[str, Any]) -> None:
    assert Pool.from_resource(copy.deepcopy(doc)) == _reference_pool(doc)


def test_plain_documents_never_reach_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipam.pools import _plain_pool

    def no_model(name: str) -> Any:
        raise AssertionError(f"{name}: plain document sent to the pydantic model")

    monkeypatch.setattr(values, "_model", no_model)
    for doc in BLOCKS[:PLAIN_BLOCKS]:
        values.AllocationBlock.from_dict(copy.deepcopy(doc))
    for name, docs in (("IPAMHandle", HANDLES[:6]), ("BlockAffinity", AFFINITIES), ("IPAMConfigValue", CONFIGS[:4])):
        for doc in docs:
            getattr(values, name).from_dict(copy.deepcopy(doc))
    for doc in POOLS[:PLAIN_POOLS]:
        assert _plain_pool(copy.deepcopy(doc)) == _reference_pool(doc)


@pytest.mark.parametrize("doc", BAD_POOLS, ids=range(len(BAD_POOLS)))
def test_invalid_pool_rejected_as_before(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _reference_pool(doc)
    with pytest.raises(ValidationError):
        Pool.from_resource(copy.deepcopy(doc))


def test_invalid_pool_is_ignored_with_a_log(etcd_backend, caplog) -> None:  # type: ignore[no-untyped-def]
    from datastore.keys import ResourceKey
    from ipam.pools import load_pools

    etcd_backend.create(ResourceKey("IPPool", "good"), _pool({"cidr": "10.50.0.0/16"}, metadata={"name": "good"}))
    etcd_backend.create(ResourceKey("IPPool", "bad"), _pool({"cidr": "10.51.0.1/16"}, metadata={"name": "bad"}))
    with caplog.at_level("WARNING", logger="ipam.pools"):
        pools = load_pools(etcd_backend)
    assert [p.name for p in pools] == ["good"]
    assert "ignoring invalid IPPool" in caplog.text and "bad" in caplog.text


# -- the CNI path imports no pydantic ---------------------------------------------

_PROBE = r'''
import atexit, json, os, sys
def dump():
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core")
                                  or m.startswith("datastore.models."))) + "\n")
atexit.register(dump)
sys.argv = ["calico"]
from cni.main import main
main()
'''


def test_cni_add_check_del_import_no_pydantic(datastore, cni_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """calico ADD/CHECK/DEL (in-process calico-ipam) with a pool, an IPAM
    config and a block claimed on the way: no pydantic module loaded, with
    either datastore."""
    from ipam.config import IPAMSettings, save_settings
    from tests.support.netns import Netns
    from tests.support.pools import create_pool

    backend = datastore.backend
    create_pool(backend, "probe-pool", "10.78.0.0/16", nodeSelector="all()", ipipMode="Never")
    save_settings(backend, IPAMSettings(strict_affinity=False, auto_allocate_blocks=True, max_blocks_per_host=0))
    out = tmp_path / "modules.jsonl"
    node = f"probe-{uuid.uuid4().hex[:6]}"
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "probe-net", "type": "calico", **datastore.netconf,
                            "nodename": node, "log_level": "debug",
                            "log_file_path": str(tmp_path / "cni.log"), "ipam_lock_file": str(tmp_path / "ipam.lock"),
                            "ipam": {"type": "calico-ipam"}}
    pod = f"probe-{uuid.uuid4().hex[:6]}"
    cni_args = ""
    if datastore.is_kubernetes:
        datastore.prepare_pod("default", pod, node)
        cni_args = f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=x"
    with Netns("pnp") as ns:
        cid = f"probe{uuid.uuid4().hex[:10]}"
        for command in ("ADD", "CHECK", "DEL"):
            env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
                   "CNI_CONTAINERID": cid, "CNI_NETNS": ns.path, "CNI_IFNAME": "eth0", "CNI_ARGS": cni_args,
                   "CNI_PATH": cni_path, "PROBE_OUT": str(out), "PYTHONDONTWRITEBYTECODE": "1"}
            res = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(conf).encode(), env=env,
                                 capture_output=True, cwd=REPO, timeout=120)
            assert res.returncode == 0, (command, res.stdout, res.stderr[-2000:])
            if command == "ADD":
                conf["prevResult"] = json.loads(res.stdout)
                assert conf["prevResult"]["ips"][0]["address"].startswith("10.78.")
    loaded = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(loaded) == 3
    log = (tmp_path / "cni.log").read_text()
    assert loaded == [[], [], []], [line for line in log.splitlines() if "plain form" in line] or loaded
    assert "plain form" not in log
