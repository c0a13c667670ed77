"""Resource commands through the real executable: apply/get/delete round trips
for every kind, create/replace/patch/label semantics, namespaces, and the
messages and exit codes operators see."""
from __future__ import annotations

import json
import os
from typing import Any

import pytest
import yaml

from datastore.keys import ResourceKey
from datastore.kinds import KINDS
from datastore.models import dump_resource, load_resource, load_yaml_documents
from tests.calicoctl.conftest import DATA, Calicoctl, stored_keys

pytestmark = pytest.mark.etcd

EVERY_KIND = os.path.join(DATA, "every_kind.yaml")
STAGED_KINDS = os.path.join(DATA, "staged_kinds.yaml")


def _documents() -> list[dict]:
    """every_kind.yaml, plus the staged policies once their kinds are registered."""
    docs = []
    for path in (EVERY_KIND, STAGED_KINDS):
        with open(path, encoding="utf-8") as f:
            docs += [d for d in load_yaml_documents(f.read()) if d["kind"] in KINDS]
    return docs


def _expected() -> list[dict]:
    return [dump_resource(load_resource(d)) for d in _documents()]


def _ident(doc: dict) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace") or "", meta["name"]


# Kinds the Kubernetes datastore derives from native objects (k8s Nodes, Pods,
# Namespaces/ServiceAccounts): their round trip there is test_kdd_native_kinds.
NATIVE_IN_KDD = {"Node", "WorkloadEndpoint", "Profile"}


def test_round_trip_every_kind(calicoctl: Calicoctl, tmp_path: Any) -> None:
    expected = _expected()
    assert {d["kind"] for d in expected} == set(KINDS) - {"ClusterInformation"}
    docs = _documents()
    if calicoctl.is_kubernetes:
        calicoctl.ensure_namespace("shop")  # namespaced CRs need their Namespace
        docs = [d for d in docs if d["kind"] not in NATIVE_IN_KDD]
        expected = [d for d in expected if d["kind"] not in NATIVE_IN_KDD]
    source = str(tmp_path / "resources.yaml")
    with open(source, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)

    out = calicoctl.ok("apply", "-f", source)
    assert out.stdout == f"Successfully applied {len(expected)} resource(s)\n"

    # get -f returns every resource of the file, as stored.
    got = json.loads(calicoctl.ok("get", "-f", source, "-o", "json").stdout)
    assert [_ident(d) for d in got] == [_ident(d) for d in expected]
    for want, have in zip(expected, got):
        assert have["spec"] == want["spec"], _ident(want)
        assert have["metadata"].get("labels") == want["metadata"].get("labels")
        assert have["metadata"]["uid"] and have["metadata"]["creationTimestamp"] and have["metadata"]["resourceVersion"]

    # The YAML output is valid input: applying it again changes nothing but revisions.
    yaml_out = calicoctl.ok("get", "-f", source, "-o", "yaml").stdout
    again = calicoctl.ok("apply", "-f", "-", input=yaml_out)
    assert again.stdout == f"Successfully applied {len(expected)} resource(s)\n"

    # ClusterInformation is read-only but readable (written by the first write command).
    info = calicoctl.fails("apply", "-f", "-", input=(
        "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata:\n  name: default\n"))
    assert info.stderr == ("Failed to apply 'ClusterInformation' resource: [operation apply is not supported "
                           "on ClusterInformation: resource is readonly]\n")
    assert "datastoreReady: true" in calicoctl.ok("get", "clusterinfo", "default", "-o", "yaml").stdout

    deleted = calicoctl.ok("delete", "-f", source)
    assert deleted.stdout == f"Successfully deleted {len(expected)} resource(s)\n"
    gone = calicoctl.fails("get", "-f", source)
    assert gone.stderr.count("resource does not exist: ") == len(expected)
    assert "resource does not exist: NetworkPolicy(shop/allow-web) with error: <nil>" in gone.stderr
    keys = stored_keys(calicoctl.backend)
    assert keys and all("clusterinformations/default" in k or "tiers/default" in k for k in keys), keys


def _native(kind: str, name: str) -> str:
    with open(EVERY_KIND, encoding="utf-8") as f:
        for doc in load_yaml_documents(f.read()):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return yaml.safe_dump(doc)
    raise KeyError(name)


def test_kdd_native_kinds(calicoctl_kdd: Calicoctl) -> None:
    """Kubernetes datastore: Nodes, WorkloadEndpoints and Profiles are views of
    native objects.  calicoctl reads them, updates what upstream's KDD clients
    update (Nodes), and refuses the rest with upstream's errors, writing nothing."""
    ctl = calicoctl_kdd
    ctl.ensure_namespace("shop")
    before = stored_keys(ctl.backend)

    # Profiles mirror Namespaces (kns.) and ServiceAccounts (ksa.): read-only.
    profile = _native("Profile", "kns.shop")
    assert ctl.fails("create", "-f", "-", input=profile).stderr == \
        "Failed to create 'Profile' resource: [operation Create is not supported on Profile(kns.shop)]\n"
    assert ctl.fails("apply", "-f", "-", input=profile).stderr == \
        "Failed to apply 'Profile' resource: [operation Update is not supported on Profile(kns.shop)]\n"
    assert ctl.fails("replace", "-f", "-", input=profile).stderr == \
        "Failed to replace 'Profile' resource: operation Update is not supported on Profile(kns.shop)\n"
    assert ctl.fails("delete", "profile", "kns.shop").stderr == \
        "Failed to delete 'Profile' resource: operation Delete is not supported on Profile(kns.shop)\n"
    assert ctl.fails("label", "profile", "kns.shop", "team=retail").stderr == \
        "failed to update profile kns.shop, label not changed\n"
    assert ctl.fails("patch", "profile", "kns.shop", "-p", '{"spec":{"labelsToApply":{"a":"b"}}}').stderr == \
        "Hit error: updating existing resource: operation Update is not supported on Profile(kns.shop)\n"
    shown = json.loads(ctl.ok("get", "profile", "kns.shop", "-o", "json").stdout)
    assert shown["spec"]["labelsToApply"]["pcns.projectcalico.org/name"] == "shop"
    names = ctl.ok("get", "profiles", "-o", "name").stdout.splitlines()
    assert {"profile.projectcalico.org/kns.shop", "profile.projectcalico.org/projectcalico-default-allow"} <= set(names)

    # WorkloadEndpoints are pods: the CNI plugin's patch is the only write.
    wep = _native("WorkloadEndpoint", "node--1-k8s-web--0-eth0")
    assert ctl.fails("apply", "-f", "-", input=wep).stderr == (
        "Failed to apply 'WorkloadEndpoint' resource: [resource does not exist: "
        "WorkloadEndpoint(shop/node--1-k8s-web--0-eth0) with error: <nil>]\n")
    ctl.kube.create_pod("shop", "web-0", "node-1", {"app": "web"})
    refused = ("operation {} is not supported on WorkloadEndpoint(shop/node--1-k8s-web--0-eth0): "
               "unsupported PatchMode: patchModeUnspecified")
    assert ctl.fails("create", "-f", "-", input=wep).stderr == \
        f"Failed to create 'WorkloadEndpoint' resource: [{refused.format('Create')}]\n"
    assert ctl.fails("apply", "-f", "-", input=wep).stderr == \
        f"Failed to apply 'WorkloadEndpoint' resource: [{refused.format('Update')}]\n"
    listing = ctl.ok("get", "wep", "-n", "shop").stdout.splitlines()
    assert listing[0].split() == ["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]
    assert listing[1].split()[:3] == ["shop", "web-0", "node-1"]
    got = json.loads(ctl.ok("get", "wep", "node--1-k8s-web--0-eth0", "-n", "shop", "-o", "json").stdout)
    assert got["spec"]["pod"] == "web-0" and got["metadata"]["labels"]["app"] == "web"
    # Upstream's KDD delete blanks the pod's Calico IP annotations (the CNI DEL's write); the pod stays.
    assert ctl.ok("delete", "wep", "node--1-k8s-web--0-eth0", "-n", "shop").stdout == \
        "Successfully deleted 1 'WorkloadEndpoint' resource(s)\n"
    pod = ctl.kube.must("GET", "/api/v1/namespaces/shop/pods/web-0")
    assert pod["metadata"]["annotations"]["cni.projectcalico.org/podIPs"] == ""

    # Nodes: kubelet registers them; calicoctl updates their Calico fields only.
    node = _native("Node", "node-1")
    assert ctl.fails("apply", "-f", "-", input=node).stderr == \
        "Failed to apply 'Node' resource: [resource does not exist: Node(node-1) with error: <nil>]\n"
    ctl.ensure_node("node-1")
    assert ctl.fails("create", "-f", "-", input=node).stderr == \
        "Failed to create 'Node' resource: [operation Create is not supported on Node(node-1)]\n"
    assert ctl.ok("apply", "-f", "-", input=node).stdout == "Successfully applied 1 'Node' resource(s)\n"
    shown = json.loads(ctl.ok("get", "node", "node-1", "-o", "json").stdout)
    assert shown["spec"]["bgp"] == {"ipv4Address": "192.0.2.11/24", "ipv6Address": "2001:db8::11/64"}
    assert shown["metadata"]["labels"]["rack"] == "r1"
    assert ctl.ok("label", "node", "node-1", "zone=a").stdout == "Successfully set label zone on node node-1\n"
    ctl.ok("patch", "node", "node-1", "-p", '{"spec":{"bgp":{"routeReflectorClusterID":"224.0.0.1"}}}')
    shown = json.loads(ctl.ok("get", "node", "node-1", "-o", "json").stdout)
    assert shown["metadata"]["labels"]["zone"] == "a"
    assert shown["spec"]["bgp"]["routeReflectorClusterID"] == "224.0.0.1"
    assert ctl.fails("delete", "node", "node-1").stderr == \
        "Failed to delete 'Node' resource: operation Delete is not supported on Node(node-1)\n"
    ctl.kube.must("GET", "/api/v1/nodes/node-1")

    # Only ClusterInformation and the default tier (written by the first write command) are CRs.
    after = stored_keys(ctl.backend)
    assert set(after) - set(before) <= {"clusterinformations/default", "tiers/default"}, after


POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: {name}
{meta}spec:
  cidr: {cidr}
"""


def test_create_replace_apply_semantics(calicoctl: Calicoctl) -> None:
    two = POOL.format(name="p1", meta="", cidr="10.1.0.0/24") + "---\n" + POOL.format(name="p2", meta="", cidr="10.2.0.0/24")
    assert calicoctl.ok("create", "-f", "-", input=two).stdout == "Successfully created 2 'IPPool' resource(s)\n"
    again = calicoctl.fails("create", "-f", "-", input=two)
    assert again.stderr == ("Failed to create any 'IPPool' resources: [resource already exists: IPPool(p1) "
                            "resource already exists: IPPool(p2)]\n")
    skip = calicoctl.ok("create", "--skip-exists", "-f", "-", input=two)
    assert skip.stdout == "Successfully created 2 'IPPool' resource(s)\n"

    three = two + "---\n" + POOL.format(name="p3", meta="", cidr="10.3.0.0/24")
    partial = calicoctl.fails("create", "-f", "-", input=three)
    assert partial.stdout == "Partial success: created the first 1 out of 3 'IPPool' resources:\n"
    assert partial.stderr.startswith("Hit error: [resource already exists: IPPool(p1)")

    # replace needs the resource to exist, keeps uid/creationTimestamp, applies labels as given.
    before = calicoctl.backend.get(ResourceKey("IPPool", "p1")).value
    labelled = POOL.format(name="p1", meta="  labels:\n    env: prod\n", cidr="10.1.0.0/24")
    assert calicoctl.ok("replace", "-f", "-", input=labelled).stdout == "Successfully replaced 1 'IPPool' resource(s)\n"
    after = calicoctl.backend.get(ResourceKey("IPPool", "p1")).value
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["creationTimestamp"] == before["metadata"]["creationTimestamp"]
    assert after["metadata"]["labels"] == {"env": "prod"}
    missing = calicoctl.fails("replace", "-f", "-", input=POOL.format(name="p9", meta="", cidr="10.9.0.0/24"))
    assert missing.stderr == "Failed to replace 'IPPool' resource: resource does not exist: IPPool(p9) with error: <nil>\n"

    # A stale resourceVersion is a conflict; the current one works.
    rv = after["metadata"]["resourceVersion"]
    stale = POOL.format(name="p1", meta='  resourceVersion: "1"\n', cidr="10.1.0.0/24")
    assert calicoctl.fails("replace", "-f", "-", input=stale).stderr == \
        "Failed to replace 'IPPool' resource: update conflict: IPPool(p1)\n"
    fresh = POOL.format(name="p1", meta=f'  resourceVersion: "{rv}"\n', cidr="10.1.0.0/24")
    calicoctl.ok("apply", "-f", "-", input=fresh)

    # Delete: several names, one missing (reported, exit 1), then --skip-not-exists.
    gone = calicoctl.fails("delete", "ippool", "p1", "p9")
    assert gone.stdout == "Successfully deleted 1 'IPPool' resource(s)\n"
    assert gone.stderr == "Failed to delete 'IPPool' resource: resource does not exist: IPPool(p9) with error: <nil>\n"
    assert calicoctl.ok("delete", "pools", "p2", "p9", "--skip-not-exists").stdout == \
        "Successfully deleted 2 'IPPool' resource(s)\n"


def test_patch_and_label(calicoctl: Calicoctl) -> None:
    calicoctl.ok("apply", "-f", "-", input=POOL.format(name="p1", meta="", cidr="10.1.0.0/24"))
    assert calicoctl.ok("patch", "ippool", "p1", "-p", '{"spec":{"natOutgoing":true}}').stdout == \
        "Successfully patched 1 'IPPool' resource\n"
    calicoctl.ok("patch", "ippool", "p1", "--type", "json",
                 "-p", '[{"op":"replace","path":"/spec/ipipMode","value":"Always"}]')
    spec = calicoctl.backend.get(ResourceKey("IPPool", "p1")).value["spec"]
    assert spec["natOutgoing"] is True and spec["ipipMode"] == "Always" and spec["blockSize"] == 26
    bad = calicoctl.fails("patch", "ippool", "p1", "-p", '{"spec":{"blockSize":12}}')
    assert bad.stderr.startswith("Hit error: creating resource from patched data: invalid IPPool 'p1': spec.blockSize:")
    assert calicoctl.backend.get(ResourceKey("IPPool", "p1")).value["spec"]["blockSize"] == 26
    assert calicoctl.fails("patch", "ippool", "nope", "-p", "{}").stderr == \
        "Hit error: resource does not exist: IPPool(nope) with error: <nil>\n"

    assert calicoctl.ok("label", "ippool", "p1", "env=dev").stdout == "Successfully set label env on ippool p1\n"
    clash = calicoctl.fails("label", "ippool", "p1", "env=prod")
    assert clash.stderr == ("failed to update label of ippool p1, key env is already present. "
                            "please use '--overwrite' to set a new value.\n")
    assert calicoctl.ok("label", "ippool", "p1", "env=prod", "--overwrite").stdout == \
        "Successfully updated label env on ippool p1\n"
    assert calicoctl.backend.get(ResourceKey("IPPool", "p1")).value["metadata"]["labels"] == {"env": "prod"}
    assert calicoctl.ok("label", "ippool", "p1", "env", "--remove").stdout == \
        "Successfully removed label env from ippool p1\n"
    assert "labels" not in calicoctl.backend.get(ResourceKey("IPPool", "p1")).value["metadata"]
    assert calicoctl.fails("label", "ippool", "nope", "a=b").stderr == "ippool nope not found\n"
    bad_value = calicoctl.fails("label", "ippool", "p1", "env=bad value!")
    assert bad_value.stderr.startswith("failed to update ippool p1, label not changed")


NP = """apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: np1
{ns}spec:
  selector: all()
"""


def test_namespaces(calicoctl: Calicoctl) -> None:
    calicoctl.ensure_namespace("prod")  # kubernetes: namespaced CRs need their Namespace
    calicoctl.ok("apply", "-f", "-", input=NP.format(ns=""))  # default namespace
    calicoctl.ok("apply", "-n", "prod", "-f", "-", input=NP.format(ns=""))
    mismatch = calicoctl.fails("apply", "-n", "prod", "-f", "-", input=NP.format(ns="  namespace: dev\n"))
    assert mismatch.stderr == ("Failed to execute command: stdin: resource namespace does not match client "
                               "namespace. dev != prod\n")
    listing = calicoctl.ok("get", "networkpolicies", "-A").stdout
    assert listing.splitlines()[1:3] == ["default     np1    default   ", "prod        np1    default   "]
    assert calicoctl.ok("get", "policy", "-n", "prod", "-o", "name").stdout == \
        "networkpolicy.projectcalico.org/np1\n"
    assert calicoctl.fails("get", "ippools", "-n", "prod").stderr == "IPPool is not namespaced\n"
    assert calicoctl.fails("get", "policy", "np1", "-A").stderr == \
        "cannot use --all-namespace flag for getting a single resource\n"
    assert calicoctl.ok("delete", "policy", "np1", "-n", "prod").stdout == \
        "Successfully deleted 1 'NetworkPolicy' resource(s)\n"


# (case, input document(s), text the error must contain)
BAD_INPUTS = [
    ("broken YAML", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: [name: x\n", "cannot parse YAML"),
    ("unknown kind", "apiVersion: projectcalico.org/v3\nkind: IPPoolz\nmetadata:\n  name: x\n",
     "Unknown resource type (IPPoolz) and/or version (projectcalico.org/v3)"),
    ("invalid CIDR", POOL.format(name="x", meta="", cidr="10.0.0.300/24"),
     "invalid IPPool 'x': spec.cidr: IP pool CIDR '10.0.0.300/24' must be a valid subnet"),
    ("wrong apiVersion", POOL.format(name="x", meta="", cidr="10.0.0.0/24").replace("v3", "v1"),
     "Unknown resource type (IPPool) and/or version (projectcalico.org/v1): apiVersion must be projectcalico.org/v3"),
    ("missing name", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {}\nspec:\n  cidr: 10.0.0.0/24\n",
     "IPPool: metadata.name is required"),
    ("unknown field", POOL.format(name="x", meta="", cidr="10.0.0.0/24") + "  colour: blue\n",
     "spec.colour: field in document is not recognized or is in the wrong location"),
    ("namespace on a cluster kind", POOL.format(name="x", meta="  namespace: a\n", cidr="10.0.0.0/24"),
     "namespace should not be specified for a non-namespaced resource. IPPool is not a namespaced resource"),
    ("one bad document among good ones",
     POOL.format(name="good", meta="", cidr="10.0.0.0/24") + "---\n" + POOL.format(name="bad", meta="", cidr="10.0.0.1/24"),
     "stdin: resource 2: invalid IPPool 'bad': spec.cidr: IP pool CIDR '10.0.0.1/24' is not strictly masked"),
    ("empty input", "", "No resources specified in file stdin"),
]


def test_bad_inputs_write_nothing(calicoctl: Calicoctl) -> None:
    failures = []
    for case, text, message in BAD_INPUTS:
        for verb in ("apply",):
            result = calicoctl(verb, "-f", "-", input=text)
            if result.returncode != 1 or message not in result.stderr or not result.stderr.startswith(
                    "Failed to execute command: "):
                failures.append(f"{case}: {result}")
            keys = stored_keys(calicoctl.backend)
            if keys:
                failures.append(f"{case}: wrote {keys}")
    assert not failures, "\n".join(failures)
    assert len(BAD_INPUTS) >= 8


def test_command_line_errors(calicoctl: Calicoctl) -> None:
    assert calicoctl.fails("get", "frobs").stderr == "resource type 'frobs' is not supported\n"
    bad = calicoctl.fails("gte", "ippools")
    assert bad.stderr.startswith("Invalid option: 'calicoctl gte ippools'. Use flag '--help' to read about a specific subcommand.")
    assert calicoctl.fails("get", "ippools", "-o", "xml").stderr == "unrecognized output format 'xml'\n"
    assert calicoctl.fails("get", "ippools", "-o", "custom-columns=NAME,NOPE").stderr.startswith("Unknown heading NOPE")
    assert calicoctl.fails("delete", "ippool").stderr == "No resources specified\n"
    assert calicoctl.fails("get", "ippool", "-f", EVERY_KIND).stderr.startswith("Give either a KIND")
    # validate checks without a datastore (the environment points nowhere).
    valid = calicoctl.ok("validate", "-f", EVERY_KIND, env={"ETCD_ENDPOINTS": "http://127.0.0.1:9"})
    assert valid.stdout == "Successfully validated 17 resource(s)\n"
    invalid = calicoctl.fails("validate", "-f", "-", input=BAD_INPUTS[2][1])
    assert BAD_INPUTS[2][2] in invalid.stderr
    missing = calicoctl.fails("apply", "-f", "/nonexistent/x.yaml")
    assert missing.stderr == "Failed to execute command: open /nonexistent/x.yaml: no such file or directory\n"
    assert stored_keys(calicoctl.backend) == []


def test_directory_input_and_config_file(calicoctl_etcd: Calicoctl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    calicoctl = calicoctl_etcd
    d = tmp_path / "res"
    (d / "sub").mkdir(parents=True)
    (d / "a.yaml").write_text(POOL.format(name="da", meta="", cidr="10.10.0.0/24"))
    (d / "b.json").write_text(json.dumps(load_yaml_documents(POOL.format(name="db", meta="", cidr="10.11.0.0/24"))[0]))
    (d / "sub" / "c.yml").write_text(POOL.format(name="dc", meta="", cidr="10.12.0.0/24"))
    (d / "notes.txt").write_text("ignored")
    assert calicoctl.ok("apply", "-f", str(d)).stdout == "Successfully applied 2 'IPPool' resource(s)\n"

    # The CalicoAPIConfig file wins over the environment (which points nowhere here).
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n"
                   f"  datastoreType: etcdv3\n  etcdEndpoints: {calicoctl.env['ETCD_ENDPOINTS']}\n")
    result = calicoctl("apply", "-R", "-f", str(d), "-c", str(cfg),
                       env={"ETCD_ENDPOINTS": "http://127.0.0.1:9", "DATASTORE_TYPE": "etcdv3"})
    assert result.ok, str(result)
    assert result.stdout == "Successfully applied 3 'IPPool' resource(s)\n"
    cfg.write_text("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdEndpoint: x\n")
    broken = calicoctl.fails("get", "ippools", "-c", str(cfg))
    assert broken.stderr.startswith(f"Failed to create Calico API client: syntax error in {cfg}: unknown field")
