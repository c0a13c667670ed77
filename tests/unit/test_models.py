"""Unit tests for datastore.models: round trips, defaulting, validation, laziness."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from datastore.models import ResourceError, dump_resource, load_resource, load_yaml_documents

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------
# Realistic upstream-style documents (as `calicoctl get -o yaml` prints them /
# as stored in etcd: defaults filled in, rules with source/destination {}).
# ---------------------------------------------------------------------------

EXAMPLES_YAML = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
  uid: 6f4b7a4e-1f2c-4a51-9e0a-0c5a7d3f2b11
  resourceVersion: "1186"
  creationTimestamp: 2024-05-01T10:00:00Z
spec:
  allowedUses:
  - Workload
  - Tunnel
  assignmentMode: Automatic
  blockSize: 26
  cidr: 192.168.0.0/16
  ipipMode: Always
  natOutgoing: true
  nodeSelector: all()
  vxlanMode: Never
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv6-ippool
spec:
  allowedUses: [Workload, Tunnel]
  assignmentMode: Automatic
  blockSize: 122
  cidr: fd00:10:244::/64
  ipipMode: Never
  natOutgoing: false
  nodeSelector: kubernetes.io/os == 'linux'
  vxlanMode: CrossSubnet
  disableBGPExport: true
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata:
  name: default
spec:
  autoAllocateBlocks: true
  maxBlocksPerHost: 4
  strictAffinity: true
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-1
  labels:
    beta.kubernetes.io/os: linux
    kubernetes.io/hostname: node-1
  annotations:
    projectcalico.org/kube-labels: '{"kubernetes.io/hostname":"node-1"}'
spec:
  addresses:
  - address: 10.0.0.11/24
    type: CalicoNodeIP
  - address: 10.0.0.11
    type: InternalIP
  bgp:
    asNumber: 64512
    ipv4Address: 10.0.0.11/24
    ipv4IPIPTunnelAddr: 192.168.84.128
    ipv6Address: fd00::11/64
  ipv4VXLANTunnelAddr: 192.168.84.129
  vxlanTunnelMACAddr: 66:b1:2c:3d:4e:5f
  orchRefs:
  - nodeName: node-1
    orchestrator: k8s
  wireguard:
    interfaceIPv4Address: 192.168.84.130
status:
  podCIDRs:
  - 10.244.1.0/24
  wireguardPublicKey: jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY=
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--1-k8s-my--pod-eth0
  namespace: default
  labels:
    app: web
    projectcalico.org/namespace: default
    projectcalico.org/orchestrator: k8s
    projectcalico.org/serviceaccount: default
spec:
  containerID: 4b1d8e1a2f3c
  endpoint: eth0
  interfaceName: cali0123456789a
  ipNetworks:
  - 192.168.84.133/32
  - fd00:10:244::5/128
  mac: 0e:3a:5b:7c:9d:1f
  node: node-1
  orchestrator: k8s
  pod: my-pod
  ports:
  - hostIP: ""
    hostPort: 0
    name: http
    port: 8080
    protocol: TCP
  - hostIP: 10.0.0.11
    hostPort: 30053
    name: ""
    port: 53
    protocol: UDP
  profiles:
  - kns.default
  - ksa.default.default
  serviceAccountName: default
  ipNATs:
  - internalIP: 192.168.84.133
    externalIP: 172.16.0.5
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node-1-eth0
  labels:
    role: ingress
spec:
  expectedIPs:
  - 10.0.0.11
  interfaceName: eth0
  node: node-1
  ports:
  - name: ssh
    port: 22
    protocol: TCP
  profiles:
  - projectcalico-default-allow
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-tcp-6379
  namespace: production
spec:
  egress:
  - action: Allow
    destination: {}
    source: {}
  ingress:
  - action: Allow
    destination:
      ports:
      - 6379
    protocol: TCP
    source:
      selector: role == 'frontend'
  - action: Log
    destination: {}
    protocol: UDP
    source:
      namespaceSelector: global()
      nets:
      - 10.0.0.0/8
  order: 100
  selector: role == 'database'
  tier: default
  types:
  - Ingress
  - Egress
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: security.deny-blocklist
spec:
  applyOnForward: true
  doNotTrack: false
  ingress:
  - action: Deny
    destination:
      notPorts:
      - 1000:2000
      - http
      ports:
      - 443
    ipVersion: 4
    protocol: TCP
    source:
      notNets:
      - 192.0.2.0/24
      serviceAccounts:
        names:
        - api
        selector: app == 'x'
  - action: Allow
    destination: {}
    icmp:
      code: 0
      type: 8
    protocol: ICMP
    source: {}
  - action: Allow
    destination:
      ports:
      - 80
    http:
      methods:
      - GET
      paths:
      - prefix: /api
    protocol: TCP
    source: {}
  - action: Pass
    destination: {}
    notProtocol: 132
    source:
      services:
        name: kube-dns
        namespace: kube-system
  namespaceSelector: has(projectcalico.org/name)
  order: 10.5
  preDNAT: true
  selector: has(role)
  tier: security
  types:
  - Ingress
  performanceHints:
  - AssumeNeededOnEveryNode
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: kns.default
spec:
  egress:
  - action: Allow
    destination: {}
    source: {}
  ingress:
  - action: Allow
    destination: {}
    source: {}
  labelsToApply:
    pcns.kubernetes.io/metadata.name: default
    pcns.projectcalico.org/name: default
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  defaultAction: Deny
  order: 300
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata:
  name: external-database
  namespace: production
  labels:
    role: db
spec:
  nets:
  - 198.51.100.0/28
  - 203.0.113.5
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: blocklist
  labels:
    role: blocked
spec:
  nets:
  - 192.0.2.0/24
  - 2001:db8::/32
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 64512
  communities:
  - name: bgp-large-community
    value: 63400:300:100
  listenPort: 179
  logSeverityScreen: Info
  nodeMeshMaxRestartTime: 120s
  nodeToNodeMeshEnabled: true
  prefixAdvertisements:
  - cidr: 172.218.4.0/26
    communities:
    - bgp-large-community
    - 63400:120
  serviceClusterIPs:
  - cidr: 10.96.0.0/12
  serviceExternalIPs:
  - cidr: 104.244.42.129/32
  bindMode: NodeIP
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  asNumber: 64567
  keepOriginalNextHop: true
  maxRestartTime: 2m0s
  nodeSelector: rack == 'rack-1'
  password:
    secretKeyRef:
      key: rr-password
      name: bgp-secrets
  peerIP: 192.20.30.40:1790
  sourceAddress: UseNodeIP
  filters:
  - export-only
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  bpfConntrackTimeouts:
    tcpEstablished: 1h
  bpfEnabled: false
  bpfLogLevel: ""
  failsafeInboundHostPorts:
  - port: 22
    protocol: TCP
  - net: 0.0.0.0/0
    port: 68
    protocol: UDP
  featureDetectOverride: ChecksumOffloadBroken=true
  floatingIPs: Disabled
  healthPort: 9099
  iptablesMarkMask: 4294901760
  iptablesRefreshInterval: 1m30s
  kubeNodePortRanges:
  - 30000:32767
  logSeverityScreen: Info
  natPortRange: 32768:65535
  nftablesMode: Auto
  reportingInterval: 0s
  routeTableRanges:
  - max: 250
    min: 1
  vxlanVNI: 4096
  wireguardEnabled: false
"""

# One example as a plain dict (also exercises building documents in Python).
CLUSTER_INFO = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "ClusterInformation",
    "metadata": {"name": "default"},
    "spec": {
        "calicoVersion": "v3.28.0",
        "clusterGUID": "a1c3f1e0b8ce4a0c9d1f2e3d4c5b6a79",
        "clusterType": "k8s,bgp,kubeadm,kdd",
        "datastoreReady": True,
        "variant": "Calico",
    },
}


def examples() -> list[dict]:
    return load_yaml_documents(EXAMPLES_YAML) + [copy.deepcopy(CLUSTER_INFO)]


ALL_KINDS = {
    "IPPool",
    "IPAMConfiguration",
    "Node",
    "WorkloadEndpoint",
    "HostEndpoint",
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "Profile",
    "Tier",
    "NetworkSet",
    "GlobalNetworkSet",
    "BGPConfiguration",
    "BGPPeer",
    "FelixConfiguration",
    "ClusterInformation",
}


def test_examples_cover_every_kind() -> None:
    from datastore.kinds import KINDS

    assert {d["kind"] for d in examples()} == ALL_KINDS
    assert ALL_KINDS <= set(KINDS)


def test_registry_and_models_agree() -> None:
    from datastore.kinds import KINDS, model_for

    for name, kind in KINDS.items():
        model = model_for(name)
        assert model.KIND == name
        assert model.NAMESPACED == kind.namespaced, name


@pytest.mark.parametrize("doc", examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_upstream_example_dumps_unchanged(doc: dict) -> None:
    res = load_resource(copy.deepcopy(doc))
    assert type(res).__name__ == doc["kind"]
    assert dump_resource(res) == doc


@pytest.mark.parametrize("doc", examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_round_trip_yaml_and_json(doc: dict) -> None:
    res = load_resource(copy.deepcopy(doc))
    dumped = dump_resource(res)
    # JSON
    (from_json,) = load_yaml_documents(json.dumps(dumped))
    assert load_resource(from_json) == res
    assert dump_resource(load_resource(from_json)) == dumped
    # YAML
    (from_yaml,) = load_yaml_documents(yaml.safe_dump(dumped))
    assert load_resource(from_yaml) == res
    assert dump_resource(load_resource(from_yaml)) == dumped


def test_timestamps_stay_strings() -> None:
    (doc,) = [d for d in load_yaml_documents(EXAMPLES_YAML) if d["metadata"]["name"] == "default-ipv4-ippool"]
    assert doc["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"
    res = load_resource(doc)
    assert res.metadata.creation_timestamp == "2024-05-01T10:00:00Z"
    assert res.metadata.uid == "6f4b7a4e-1f2c-4a51-9e0a-0c5a7d3f2b11"


def test_metadata_is_tolerant_of_kubernetes_fields() -> None:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Tier",
        "metadata": {
            "name": "platform",
            "uid": "u-1",
            "generation": 3,
            "finalizers": ["x/y"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "a", "uid": "u"}],
            "managedFields": [{"manager": "kubectl"}],
            "someFutureField": {"a": 1},
        },
        "spec": {"order": 100, "defaultAction": "Pass"},
    }
    assert dump_resource(load_resource(copy.deepcopy(doc))) == doc


# ---------------------------------------------------------------------------
# Defaulting.
# ---------------------------------------------------------------------------


def _doc(kind: str, spec: dict, name: str = "x", **meta: object) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


def test_ippool_defaults_v4_and_v6() -> None:
    v4 = dump_resource(load_resource(_doc("IPPool", {"cidr": "10.244.0.0/16"})))
    assert v4["spec"] == {
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
        "blockSize": 26,
        "cidr": "10.244.0.0/16",
        "ipipMode": "Never",
        "nodeSelector": "all()",
        "vxlanMode": "Never",
    }
    v6 = load_resource(_doc("IPPool", {"cidr": "FD00:0:0::/48"}))
    assert v6.spec.block_size == 122
    assert v6.spec.cidr == "fd00::/48"  # normalised
    assert load_resource(_doc("IPPool", {"cidr": "10.0.0.0/8", "blockSize": 0})).spec.block_size == 26


def test_ippool_small_disabled_pool_allowed() -> None:
    pool = load_resource(_doc("IPPool", {"cidr": "10.0.0.0/28", "disabled": True}))
    assert pool.spec.block_size == 26


def test_policy_types_default_like_upstream() -> None:
    allow = {"action": "Allow"}
    none = load_resource(_doc("NetworkPolicy", {}))
    assert none.spec.types == ["Ingress"]
    assert none.metadata.namespace == "default"
    assert none.spec.tier == "default"
    assert load_resource(_doc("NetworkPolicy", {"ingress": [allow]})).spec.types == ["Ingress"]
    assert load_resource(_doc("NetworkPolicy", {"egress": [allow]})).spec.types == ["Egress"]
    both = load_resource(_doc("GlobalNetworkPolicy", {"ingress": [allow], "egress": [allow]}))
    assert both.spec.types == ["Ingress", "Egress"]
    # Explicit types are kept.
    assert load_resource(_doc("NetworkPolicy", {"types": ["Egress"]})).spec.types == ["Egress"]


def test_rules_always_have_source_and_destination() -> None:
    res = load_resource(_doc("Profile", {"ingress": [{"action": "Allow"}]}))
    assert dump_resource(res)["spec"]["ingress"] == [{"action": "Allow", "source": {}, "destination": {}}]


def test_tier_default_action() -> None:
    assert load_resource(_doc("Tier", {"order": 1})).spec.default_action == "Deny"
    assert load_resource(_doc("Tier", {}, name="kube-admin")).spec.default_action == "Pass"
    assert load_resource(_doc("Tier", {}, name="kube-baseline")).spec.default_action == "Pass"


def test_ipam_configuration_defaults() -> None:
    cfg = load_resource(_doc("IPAMConfiguration", {}, name="default"))
    assert dump_resource(cfg)["spec"] == {"autoAllocateBlocks": True, "strictAffinity": False}
    assert cfg.spec.effective_max_blocks_per_host == 20


def test_spec_may_be_omitted_where_upstream_allows() -> None:
    res = load_resource({"apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation", "metadata": {"name": "default"}})
    assert dump_resource(res)["spec"] == {}


@pytest.mark.parametrize(
    ("given", "stored"),
    [(80, 80), ("80", 80), ("1000:2000", "1000:2000"), ("443:443", 443), ("http", "http"), ("my_port.v2", "my_port.v2")],
)
def test_port_forms(given: object, stored: object) -> None:
    rule = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [given]}}
    res = load_resource(_doc("GlobalNetworkPolicy", {"ingress": [rule]}))
    assert res.spec.ingress[0].destination.ports == [stored]


@pytest.mark.parametrize(("given", "stored"), [("TCP", "TCP"), ("udp", "UDP"), ("icmpv6", "ICMPv6"), (6, 6), ("17", 17)])
def test_protocol_forms(given: object, stored: object) -> None:
    res = load_resource(_doc("GlobalNetworkPolicy", {"egress": [{"action": "Deny", "protocol": given}]}))
    assert res.spec.egress[0].protocol == stored


@pytest.mark.parametrize(("given", "stored"), [(64512, 64512), ("64512", 64512), ("1.10", 65546), (4294967295, 4294967295)])
def test_as_number_forms(given: object, stored: int) -> None:
    assert load_resource(_doc("BGPPeer", {"asNumber": given, "peerIP": "10.0.0.1"})).spec.as_number == stored


def test_bgp_peer_ipv6_with_port() -> None:
    assert load_resource(_doc("BGPPeer", {"peerIP": "[fd00::1]:179", "asNumber": 65001})).spec.peer_ip == "[fd00::1]:179"


def test_felix_attribute_names() -> None:
    from datastore.models.felix import FIELD_NAMES

    res = load_resource(_doc("FelixConfiguration", {"iptablesRefreshInterval": "90s", "bpfCTLBLogFilter": "all"}, name="node.node-1"))
    assert res.spec.iptables_refresh_interval == "90s"
    assert FIELD_NAMES["bpfCTLBLogFilter"] == "bpf_ctlb_log_filter"
    assert FIELD_NAMES["vxlanVNI"] == "vxlan_vni"


def test_models_accept_snake_case_names_too() -> None:
    from datastore.models.ippool import IPPool

    pool = IPPool(metadata={"name": "p"}, spec={"cidr": "10.1.0.0/16", "block_size": 28, "nat_outgoing": True})
    assert dump_resource(pool)["spec"]["blockSize"] == 28
    assert pool.kind == "IPPool" and pool.api_version == "projectcalico.org/v3"


# ---------------------------------------------------------------------------
# Invalid documents: each must be rejected with a message naming the field.
# ---------------------------------------------------------------------------


def _rule_doc(rule: dict, kind: str = "GlobalNetworkPolicy") -> dict:
    return _doc(kind, {"ingress": [rule]})


INVALID: list[tuple[str, dict, str]] = [
    ("pool block size too big", _doc("IPPool", {"cidr": "10.0.0.0/16", "blockSize": 40}), "blockSize"),
    ("pool v6 block size too small", _doc("IPPool", {"cidr": "fd00::/48", "blockSize": 100}), "blockSize"),
    ("pool smaller than block", _doc("IPPool", {"cidr": "10.0.0.0/28", "blockSize": 26}), "blockSize"),
    ("pool cidr not masked", _doc("IPPool", {"cidr": "10.0.0.1/8"}), "cidr"),
    ("pool cidr garbage", _doc("IPPool", {"cidr": "10.0.0.0/33"}), "cidr"),
    ("pool v4 link local", _doc("IPPool", {"cidr": "169.254.0.0/16"}), "cidr"),
    ("pool overlapping v4 link local", _doc("IPPool", {"cidr": "169.0.0.0/8"}), "cidr"),
    ("pool v6 link local", _doc("IPPool", {"cidr": "fe80::/64"}), "cidr"),
    ("pool missing cidr", _doc("IPPool", {"natOutgoing": True}), "cidr"),
    ("pool bad ipipMode", _doc("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"}), "ipipMode"),
    ("pool bad vxlanMode", _doc("IPPool", {"cidr": "10.0.0.0/16", "vxlanMode": "always"}), "vxlanMode"),
    ("pool ipip and vxlan", _doc("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "CrossSubnet"}), "ipipMode"),
    ("pool ipip on v6", _doc("IPPool", {"cidr": "fd00::/48", "ipipMode": "Always"}), "ipipMode"),
    ("pool typo field", _doc("IPPool", {"cidr": "10.0.0.0/16", "blokSize": 26}), "blokSize"),
    ("pool bad node selector", _doc("IPPool", {"cidr": "10.0.0.0/16", "nodeSelector": "has(foo"}), "nodeSelector"),
    ("pool bad allowed use", _doc("IPPool", {"cidr": "10.0.0.0/16", "allowedUses": ["Pods"]}), "allowedUses"),
    ("pool with namespace", _doc("IPPool", {"cidr": "10.0.0.0/16"}, namespace="default"), "namespace"),
    ("bad resource name", _doc("IPPool", {"cidr": "10.0.0.0/16"}, name="Bad_Name"), "name"),
    ("name too long", _doc("Profile", {}, name="a" * 254), "name"),
    ("bad label value", _doc("Tier", {}, labels={"app": "bad value!"}), "labels"),
    ("bad namespace", _doc("NetworkPolicy", {}, namespace="Not_OK"), "namespace"),
    ("rule bad action", _rule_doc({"action": "Accept"}), "action"),
    ("rule port out of range", _rule_doc({"action": "Allow", "protocol": "TCP", "destination": {"ports": [70000]}}), "ports"),
    ("rule port zero", _rule_doc({"action": "Allow", "protocol": "TCP", "destination": {"ports": [0]}}), "ports"),
    ("rule reversed range", _rule_doc({"action": "Allow", "protocol": "TCP", "source": {"notPorts": ["2000:1000"]}}), "notPorts"),
    ("rule bad named port", _rule_doc({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["no spaces"]}}), "ports"),
    ("rule ports need protocol", _rule_doc({"action": "Allow", "destination": {"ports": [80]}}), "destination"),
    ("rule ports need tcp/udp", _rule_doc({"action": "Allow", "protocol": "ICMP", "source": {"ports": [80]}}), "source"),
    ("rule bad protocol name", _rule_doc({"action": "Allow", "protocol": "TCPX"}), "protocol"),
    ("rule protocol number", _rule_doc({"action": "Allow", "notProtocol": 256}), "notProtocol"),
    ("rule protocol zero", _rule_doc({"action": "Allow", "protocol": 0}), "protocol"),
    ("rule bad ipVersion", _rule_doc({"action": "Allow", "ipVersion": 5}), "ipVersion"),
    ("rule icmp code without type", _rule_doc({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}}), "code"),
    ("rule icmp with tcp", _rule_doc({"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}), "icmp"),
    ("rule icmp type range", _rule_doc({"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 255}}), "type"),
    ("rule icmpv6 with ipVersion 4", _rule_doc({"action": "Allow", "ipVersion": 4, "protocol": "ICMPv6"}), "protocol"),
    ("rule unmasked net", _rule_doc({"action": "Allow", "source": {"nets": ["10.0.0.1/8"]}}), "nets"),
    ("rule mixed families", _rule_doc({"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}, "destination": {"nets": ["fd00::/8"]}}), "destination"),
    ("rule nets vs ipVersion", _rule_doc({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}}), "source"),
    ("rule bad selector", _rule_doc({"action": "Allow", "source": {"selector": "a == "}}), "selector"),
    ("rule global() in selector", _rule_doc({"action": "Allow", "source": {"selector": "global()"}}), "selector"),
    ("rule http on deny", _rule_doc({"action": "Deny", "http": {"methods": ["GET"]}}), "http"),
    ("rule http path", _rule_doc({"action": "Allow", "http": {"paths": [{"exact": "/a", "prefix": "/b"}]}}), "prefix"),
    ("rule typo", _rule_doc({"action": "Allow", "destinaton": {}}), "destinaton"),
    ("rule service without name", _rule_doc({"action": "Allow", "source": {"services": {"namespace": "a"}}}), "services"),
    ("policy duplicate types", _doc("NetworkPolicy", {"types": ["Ingress", "Ingress"]}), "types"),
    ("policy bad type", _doc("NetworkPolicy", {"types": ["Inbound"]}), "types"),
    ("policy global() selector", _doc("NetworkPolicy", {"selector": "global()"}), "selector"),
    ("policy bad order", _doc("NetworkPolicy", {"order": "first"}), "order"),
    ("gnp preDNAT with egress", _doc("GlobalNetworkPolicy", {"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]}), "preDNAT"),
    ("gnp doNotTrack without applyOnForward", _doc("GlobalNetworkPolicy", {"doNotTrack": True}), "applyOnForward"),
    ("gnp service without namespace", _rule_doc({"action": "Allow", "source": {"services": {"name": "dns"}}}), "ingress"),
    ("egress rule source service", _doc("NetworkPolicy", {"egress": [{"action": "Allow", "source": {"services": {"name": "a"}}}]}), "egress"),
    ("tier builtin action", _doc("Tier", {"defaultAction": "Pass"}, name="default"), "defaultAction"),
    ("tier bad action", _doc("Tier", {"defaultAction": "Allow"}), "defaultAction"),
    ("profile bad labelsToApply", _doc("Profile", {"labelsToApply": {"bad key!": "v"}}), "labelsToApply"),
    ("ipam strict false and auto false", _doc("IPAMConfiguration", {"strictAffinity": False, "autoAllocateBlocks": False}, name="default"), "autoAllocateBlocks"),
    ("ipam maxBlocks without strict", _doc("IPAMConfiguration", {"maxBlocksPerHost": 4}, name="default"), "maxBlocksPerHost"),
    ("ipam negative maxBlocks", _doc("IPAMConfiguration", {"strictAffinity": True, "maxBlocksPerHost": -1}, name="default"), "maxBlocksPerHost"),
    ("ipam config not default", _doc("IPAMConfiguration", {}, name="other"), "name"),
    ("bgp peer asn zero", _doc("BGPPeer", {"asNumber": 0}), "asNumber"),
    ("bgp peer asn too big", _doc("BGPPeer", {"asNumber": 4294967296}), "asNumber"),
    ("bgp peer dotted asn part too big", _doc("BGPPeer", {"asNumber": "1.70000"}), "asNumber"),
    ("bgp config asn garbage", _doc("BGPConfiguration", {"asNumber": "abc"}, name="default"), "asNumber"),
    ("bgp peer bad port", _doc("BGPPeer", {"peerIP": "10.0.0.1:99999"}), "peerIP"),
    ("bgp peer bad ip", _doc("BGPPeer", {"peerIP": "10.0.0.256"}), "peerIP"),
    ("bgp peer node and nodeSelector", _doc("BGPPeer", {"node": "a", "nodeSelector": "all()"}), "nodeSelector"),
    ("bgp peer peerSelector and peerIP", _doc("BGPPeer", {"peerIP": "10.0.0.1", "peerSelector": "all()"}), "peerSelector"),
    ("bgp peer bad sourceAddress", _doc("BGPPeer", {"sourceAddress": "Node"}), "sourceAddress"),
    ("bgp config bad community", _doc("BGPConfiguration", {"communities": [{"name": "c", "value": "70000:1"}], "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}]}), "value"),
    ("bgp config undefined community", _doc("BGPConfiguration", {"prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["nope"]}]}), "prefixAdvertisements"),
    ("bgp config listenPort", _doc("BGPConfiguration", {"listenPort": 0}), "listenPort"),
    ("bgp config log level", _doc("BGPConfiguration", {"logSeverityScreen": "Verbose"}), "logSeverityScreen"),
    ("bgp config mesh password without mesh", _doc("BGPConfiguration", {"nodeToNodeMeshEnabled": False, "nodeMeshPassword": {"secretKeyRef": {"name": "s", "key": "k"}}}), "nodeMeshPassword"),
    ("node bad ipv4Address", _doc("Node", {"bgp": {"ipv4Address": "fd00::1/64"}}), "ipv4Address"),
    ("node bad mac", _doc("Node", {"vxlanTunnelMACAddr": "66:b1:2c"}), "vxlanTunnelMACAddr"),
    ("node empty bgp", _doc("Node", {"bgp": {}}), "bgp"),
    ("node bad wireguard key", {**_doc("Node", {}), "status": {"wireguardPublicKey": "nope"}}, "wireguardPublicKey"),
    ("wep multi-address network", _doc("WorkloadEndpoint", {"ipNetworks": ["10.0.0.0/24"]}), "ipNetworks"),
    ("wep bad mac", _doc("WorkloadEndpoint", {"mac": "zz:zz:zz:zz:zz:zz"}), "mac"),
    ("wep bad interface", _doc("WorkloadEndpoint", {"interfaceName": "cali0123456789abcdef"}), "interfaceName"),
    ("wep port protocol", _doc("WorkloadEndpoint", {"ports": [{"name": "p", "port": 1, "protocol": "ICMP"}]}), "protocol"),
    ("wep port name", _doc("WorkloadEndpoint", {"ports": [{"name": "Bad--Name", "port": 1, "protocol": "TCP"}]}), "name"),
    ("wep nat outside networks", _doc("WorkloadEndpoint", {"ipNetworks": ["10.0.0.1/32"], "ipNATs": [{"internalIP": "10.0.0.2", "externalIP": "1.2.3.4"}]}), "ipNATs"),
    ("wep bad gateway", _doc("WorkloadEndpoint", {"ipv4Gateway": "fd00::1"}), "ipv4Gateway"),
    ("hep needs interface or ips", _doc("HostEndpoint", {"node": "n1"}), "expectedIPs"),
    ("hep needs node", _doc("HostEndpoint", {"interfaceName": "eth0"}), "node"),
    ("hep bad expected ip", _doc("HostEndpoint", {"node": "n1", "expectedIPs": ["10.0.0"]}), "expectedIPs"),
    ("networkset bad net", _doc("NetworkSet", {"nets": ["10.0.0.300/24"]}), "nets"),
    ("networkset namespace label", _doc("NetworkSet", {}, labels={"projectcalico.org/namespace": "x"}), "metadata"),
    ("felix bad duration", _doc("FelixConfiguration", {"iptablesRefreshInterval": "ten"}, name="default"), "iptablesRefreshInterval"),
    ("felix typo", _doc("FelixConfiguration", {"iptablesRefreshIntervall": "10s"}, name="default"), "iptablesRefreshIntervall"),
    ("felix bad log level", _doc("FelixConfiguration", {"logSeverityScreen": "Verbose"}, name="default"), "logSeverityScreen"),
    ("felix bad enum", _doc("FelixConfiguration", {"nftablesMode": "On"}, name="default"), "nftablesMode"),
    ("felix bad port", _doc("FelixConfiguration", {"healthPort": 70000}, name="default"), "healthPort"),
    ("felix natOutgoingAddress v6", _doc("FelixConfiguration", {"natOutgoingAddress": "fd00::1"}, name="default"), "natOutgoingAddress"),
    ("felix both route table fields", _doc("FelixConfiguration", {"routeTableRange": {"min": 1, "max": 10}, "routeTableRanges": [{"min": 1, "max": 10}]}, name="default"), "routeTableRanges"),
    ("felix route table range", _doc("FelixConfiguration", {"routeTableRange": {"min": 1, "max": 300}}, name="default"), "routeTableRange"),
    ("felix named node ports", _doc("FelixConfiguration", {"kubeNodePortRanges": ["http"]}, name="default"), "kubeNodePortRanges"),
    ("felix failsafe protocol", _doc("FelixConfiguration", {"failsafeInboundHostPorts": [{"protocol": "ICMP", "port": 1}]}, name="default"), "protocol"),
    ("cluster info unknown field", _doc("ClusterInformation", {"ready": True}, name="default"), "ready"),
    ("pool natOutgoing not a bool", _doc("IPPool", {"cidr": "10.0.0.0/8", "natOutgoing": "maybe"}), "natOutgoing"),
]


@pytest.mark.parametrize(("case", "doc", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_documents_name_the_field(case: str, doc: dict, field: str) -> None:
    with pytest.raises(ResourceError) as info:
        load_resource(doc)
    assert field in str(info.value), f"{case}: {info.value}"
    assert info.value.kind == doc["kind"]


def test_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"kind": "IPPool", "apiVersion": "crd.projectcalico.org/v1", "metadata": {"name": "p"}, "spec": {}}, "apiVersion"),
        ({"kind": "IPPool", "metadata": {"name": "p"}, "spec": {}}, "apiVersion"),
        ({"kind": "IPPools", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"}}, "kind"),
        ({"kind": "Gizmo", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"}}, "kind"),
        ({"apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"}}, "kind"),
        ({"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {}, "spec": {"cidr": "10.0.0.0/8"}}, "metadata.name"),
        ({"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "spec": {"cidr": "10.0.0.0/8"}}, "metadata.name"),
        ({"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"}, "status": 1, "spec": {"cidr": "10.0.0.0/8"}}, "status"),
        ({"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"}, "extra": 1, "spec": {"cidr": "10.0.0.0/8"}}, "extra"),
    ],
)
def test_document_level_errors(doc: dict, field: str) -> None:
    with pytest.raises(ResourceError) as info:
        load_resource(doc)
    assert field in str(info.value)


def test_resource_error_details() -> None:
    with pytest.raises(ResourceError) as info:
        load_resource(_doc("IPPool", {"cidr": "10.0.0.0/16", "blockSize": 40}, name="pool-a"))
    err = info.value
    assert isinstance(err, ValueError)
    assert err.kind == "IPPool" and err.name == "pool-a"
    assert err.errors[0][0] == "spec.blockSize"
    assert "IPPool 'pool-a'" in str(err)
    assert "between 20 and 32" in str(err)


def test_error_paths_index_into_lists() -> None:
    rule = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, "x y"]}}
    with pytest.raises(ResourceError) as info:
        load_resource(_rule_doc(rule))
    assert "spec.ingress[0].destination.ports[1]" in str(info.value)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (_doc("HostEndpoint", {"node": "n1"}), "spec.expectedIPs:"),
        (_doc("GlobalNetworkPolicy", {"doNotTrack": True}), "spec.applyOnForward:"),
        (_doc("BGPConfiguration", {"communities": [{"name": "c", "value": "1:2"}]}), "spec.prefixAdvertisements:"),
    ],
)
def test_error_paths_use_json_names_for_absent_fields(doc: dict, path: str) -> None:
    with pytest.raises(ResourceError) as info:
        load_resource(doc)
    assert path in str(info.value)


def test_pydantic_errors_name_the_field_directly() -> None:
    from pydantic import ValidationError

    from datastore.models.ippool import IPPool

    with pytest.raises(ValidationError) as info:
        IPPool.model_validate(_doc("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}))
    assert "spec.ipipMode" in str(info.value)


# ---------------------------------------------------------------------------
# load_yaml_documents.
# ---------------------------------------------------------------------------


def test_load_yaml_documents_multi_doc_and_lists() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: projectcalico.org/v3
        kind: IPPoolList
        metadata:
          resourceVersion: "99"
        items:
        - metadata:
            name: a
          spec:
            cidr: 10.1.0.0/16
        - apiVersion: projectcalico.org/v3
          kind: IPPool
          metadata:
            name: b
          spec:
            cidr: 10.2.0.0/16
        ---
        # comment-only documents are skipped
        ---
        apiVersion: v1
        kind: List
        items:
        - apiVersion: projectcalico.org/v3
          kind: Tier
          metadata: {name: t1}
          spec: {order: 5}
        - apiVersion: projectcalico.org/v3
          kind: GlobalNetworkSetList
          items:
          - metadata: {name: gns}
            spec: {nets: [10.0.0.0/8]}
        """
    )
    docs = load_yaml_documents(text)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("IPPool", "a"),
        ("IPPool", "b"),
        ("Tier", "t1"),
        ("GlobalNetworkSet", "gns"),
    ]
    assert docs[0]["apiVersion"] == "projectcalico.org/v3"
    assert [type(load_resource(d)).__name__ for d in docs] == ["IPPool", "IPPool", "Tier", "GlobalNetworkSet"]


def test_load_yaml_documents_json_object_and_array() -> None:
    one = _doc("Tier", {"order": 1}, name="t")
    assert load_yaml_documents(json.dumps(one)) == [one]
    assert load_yaml_documents(json.dumps([one, one])) == [one, one]
    assert load_yaml_documents("  \n") == []


def test_load_yaml_documents_errors() -> None:
    with pytest.raises(ResourceError):
        load_yaml_documents("kind: [unclosed")
    with pytest.raises(ResourceError):
        load_yaml_documents("- just\n- a list\n")


# ---------------------------------------------------------------------------
# IPAM values.
# ---------------------------------------------------------------------------

BLOCK_JSON = {
    "cidr": "10.244.1.0/30",
    "affinity": "host:node-1",
    "affinity_claim_time": "2024-05-01T10:00:00Z",
    "allocations": [0, None, 1, None],
    "unallocated": [3, 1],
    "attributes": [
        {
            "handle_id": "k8s-pod-network.4b1d8e1a2f3c",
            "secondary": {"namespace": "default", "node": "node-1", "pod": "my-pod", "timestamp": "2024-05-01 10:00:01.1 +0000 UTC"},
        },
        {"handle_id": "ipip-tunnel-addr-node-1", "secondary": {"node": "node-1", "type": "ipipTunnelAddress"}},
    ],
    "sequenceNumber": 1714557600000000000,
    "sequenceNumberForAllocation": {"0": 1714557600000000001, "2": 1714557600000000000},
    "deleted": False,
}


def test_allocation_block_round_trip() -> None:
    from datastore.models.ipam import AllocationBlock

    block = AllocationBlock.from_json(json.dumps(BLOCK_JSON))
    assert block.to_dict() == BLOCK_JSON
    assert dump_resource(block) == BLOCK_JSON
    assert AllocationBlock.from_dict(json.loads(block.to_json())) == block
    assert block.host == "node-1"
    assert block.attributes[0].handle_id == "k8s-pod-network.4b1d8e1a2f3c"
    assert str(block.ordinal_to_ip(2)) == "10.244.1.2"
    assert block.ip_to_ordinal("10.244.1.3") == 3
    assert block.in_use() == 2


def test_allocation_block_keeps_null_affinity_and_unknown_fields() -> None:
    from datastore.models.ipam import AllocationBlock

    raw = {**BLOCK_JSON, "affinity": None, "futureField": {"x": 1}}
    del raw["affinity_claim_time"]
    raw["attributes"] = [{**BLOCK_JSON["attributes"][0], "alternate": {"pod": "old"}}, BLOCK_JSON["attributes"][1]]
    block = AllocationBlock.from_dict(raw)
    out = block.to_dict()
    assert out["affinity"] is None and "affinity" in json.loads(block.to_json())
    assert out == raw


def test_allocation_block_new_and_validation() -> None:
    from pydantic import ValidationError

    from datastore.models.ipam import AllocationBlock

    b = AllocationBlock.new("fd00:10:244::/122", affinity="host:n1", sequence_number=7)
    assert len(b.allocations) == 64 and b.unallocated == list(range(64))
    assert b.to_dict()["sequenceNumberForAllocation"] == {}
    with pytest.raises(ValidationError, match="allocations"):
        AllocationBlock.from_dict({**BLOCK_JSON, "allocations": [None]})
    with pytest.raises(ValidationError, match="affinity"):
        AllocationBlock.from_dict({**BLOCK_JSON, "affinity": "node-1"})
    with pytest.raises(ValidationError, match="cidr"):
        AllocationBlock.from_dict({**BLOCK_JSON, "cidr": "10.244.1.1/30"})
    # Upstream may write a null map.
    assert AllocationBlock.from_dict({**BLOCK_JSON, "sequenceNumberForAllocation": None}).sequence_number_for_allocation == {}


def test_block_affinity_round_trip() -> None:
    from pydantic import ValidationError

    from datastore.models.ipam import BlockAffinity

    raw = '{"state":"pendingDeletion","deleted":false}'
    aff = BlockAffinity.from_json(raw)
    assert aff.state == "pendingDeletion"
    assert aff.to_json() == raw
    assert BlockAffinity.from_json("").state == "confirmed"  # historical empty value
    assert BlockAffinity.from_dict({"state": "pending", "deleted": True}).to_dict() == {"state": "pending", "deleted": True}
    with pytest.raises(ValidationError, match="state"):
        BlockAffinity.from_dict({"state": "claimed"})


def test_ipam_handle_round_trip() -> None:
    from datastore.models.ipam import IPAMHandle

    raw = {"block": {"10.244.1.0/26": 2, "fd00:10:244::/122": 1}, "deleted": False}
    handle = IPAMHandle.from_dict(raw)
    assert handle.to_dict() == raw
    handle.handle_id = "k8s-pod-network.abc"  # comes from the key, never stored
    assert handle.to_dict() == raw
    assert IPAMHandle.from_dict({"block": None, "deleted": False}).block == {}


def test_ipam_config_value_round_trip() -> None:
    from datastore.models.ipam import IPAMConfigurationSpec, IPAMConfigValue

    raw = {"strict_affinity": True, "auto_allocate_blocks": True, "maxBlocksPerHost": 4}
    value = IPAMConfigValue.from_dict(raw)
    assert value.to_dict() == raw
    assert IPAMConfigValue.from_dict({"auto_allocate_blocks": True}).to_dict() == {"auto_allocate_blocks": True}
    spec = value.to_spec()
    assert isinstance(spec, IPAMConfigurationSpec) and spec.max_blocks_per_host == 4
    assert IPAMConfigValue.from_spec(spec) == value


# ---------------------------------------------------------------------------
# Laziness: importing the package must not import the model modules.
# ---------------------------------------------------------------------------


def _modules_after(code: str) -> list[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith(('datastore.models', 'pydantic')))))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_package_import_is_lazy() -> None:
    loaded = _modules_after("import datastore.models")
    assert loaded == ["datastore.models"]


def test_ipam_import_pulls_only_what_it_needs() -> None:
    loaded = [m for m in _modules_after("from datastore.models.ipam import AllocationBlock") if m.startswith("datastore.")]
    assert loaded == ["datastore.models", "datastore.models.common", "datastore.models.ipam"]


def test_lazy_attribute_access() -> None:
    import datastore.models as models
    from datastore.models.policy import Rule

    assert models.Rule is Rule
    assert models.IPPool.KIND == "IPPool"
    with pytest.raises(AttributeError):
        models.NoSuchModel  # noqa: B018
