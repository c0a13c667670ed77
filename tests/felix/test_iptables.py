"""The iptables data plane: rendering units, coexistence with kube-proxy-like
chains, drift repair, and switching a node between back ends.

Touches the host's iptables filter/nat tables: only ``cali-`` chains, our
jumps, our ``cali40``/``cali60`` IP sets and the ``KUBE-*`` chains this test
creates; all are removed at teardown (built-in chains are never flushed).
"""
from __future__ import annotations

import subprocess
import time
from typing import Callable, Iterator

import pytest

from felix.calc.policies import TierPolicies
from felix.calc.rules import ParsedRule
from felix.dataplane import iptables_render as ir
from felix.dataplane.iptables import _cmd, detect_backend, parse_save, save_text
from felix.dataplane.render import Marks
from tests.felix.harness import Cluster, cali_chains, cali_ipsets, nft_table_exists

MARKS = ir.IptMarks(Marks.from_mask(0xFFFF0000))


class _Namer:
    def selector_set(self, set_id: str, version: int) -> str:
        return f"cali{version}0{set_id}"[:31]

    def nets_set(self, nets: tuple[str, ...], version: int) -> str:
        return f"cali{version}0n:{len(nets)}"


# -- rendering (pure) ---------------------------------------------------------------------------


def test_chain_names_are_short_and_deterministic() -> None:
    short = ir.policy_chain("gnp/allow", "Ingress")
    assert short == "cali-pi-gnp/allow"
    long_id = "np/some-long-namespace-name/a-very-long-policy-name-indeed"
    a, b = ir.policy_chain(long_id, "Egress"), ir.policy_chain(long_id, "Egress")
    assert a == b and len(a) == 28 and a.startswith("cali-po-_")
    assert ir.policy_chain(long_id + "x", "Egress") != a
    assert ir.endpoint_chain("cali1234567890a", "Ingress") == "cali-tw-cali1234567890a"


def test_marks_from_mask() -> None:
    assert MARKS.set_accept == "-j MARK --set-xmark 0x10000/0x10000"
    assert MARKS.if_no_pass == "-m mark --mark 0x0/0x20000"
    custom = ir.IptMarks(Marks.from_mask(0x00F0))
    assert custom.clear_both == "-j MARK --set-xmark 0x0/0x30"


def test_rule_rendering() -> None:
    ports = tuple((p, p) for p in range(1000, 1040, 2))  # 20 single ports: two multiport chunks
    rule = ParsedRule("Allow", protocol=6, src_sets=("s:abc",), dst_ports=ports, dst_named_sets=("p:web",))
    out = ir.render_rule(rule, 4, MARKS, _Namer())
    assert len(out) == 4  # 2 chunks + named-port set + the shared return
    assert all("-p tcp -m set --match-set cali40s:abc src" in r for r in out[:3])
    assert "--match-set cali40p:web dst,dst" in out[2]
    assert out[-1] == f"{MARKS.if_accept} -j RETURN"
    # ICMP negation with a code is one iptables match; v6-only CIDRs skip v4.
    icmp = ParsedRule("Deny", versions=(4,), protocol=1, not_icmp_type=8, not_icmp_code=0)
    assert ir.render_rule(icmp, 4, MARKS, _Namer()) == ["-p icmp -m icmp ! --icmp-type 8/0 -j DROP"]
    assert ir.render_rule(icmp, 6, MARKS, _Namer()) == []
    nets = ParsedRule("Pass", src_nets=("10.0.0.0/8", "fd00::/8"), dst_not_nets=("10.1.0.0/16",))
    assert ir.render_rule(nets, 4, MARKS, _Namer()) == [
        f"-s 10.0.0.0/8 -m set ! --match-set cali40n:1 dst {MARKS.set_pass}", f"{MARKS.if_pass} -j RETURN"]
    assert ir.render_rule(nets, 6, MARKS, _Namer())[0].startswith("-s fd00::/8 ")


def test_endpoint_chain() -> None:
    tiers = (TierPolicies("sec", "Pass", ("gnp/a",)), TierPolicies("default", "Deny", ("np/x/b", "np/x/c")))
    rules = ir.render_endpoint_chain(tiers, ("kns.x",), "Ingress", MARKS, ["CT"])
    assert rules[:2] == ["CT", MARKS.clear_both]
    assert "-j cali-pi-gnp/a" in rules and f"{MARKS.if_no_pass} -j cali-pi-np/x/c" in rules
    assert rules[-3:] == ["-j cali-pri-kns.x", f"{MARKS.if_accept} -j RETURN", "-j DROP"]
    assert rules.count(f"{MARKS.if_no_pass} -j DROP") == 1  # only the Deny tier


def test_dataplane_switch_config() -> None:
    from felix.config import load_config, use_nftables

    base = {"FELIX_CONFIGFILE": "/nonexistent", "FELIX_FELIXHOSTNAME": "n"}
    cfg = load_config(base)
    assert use_nftables(cfg) and cfg.iptables_backend == "Auto" and cfg.chain_insert_mode == "INSERT"
    assert cfg.iptables_lock_timeout_secs == 10.0
    cfg = load_config({**base, "FELIX_NFTABLESMODE": "Disabled", "FELIX_IPTABLESBACKEND": "Legacy",
                       "FELIX_CHAININSERTMODE": "Append", "FELIX_IPTABLESLOCKTIMEOUTSECS": "5"})
    assert not use_nftables(cfg) and cfg.iptables_backend == "Legacy" and cfg.chain_insert_mode == "APPEND"
    assert cfg.iptables_lock_timeout_secs == 5.0
    # FelixConfiguration (camelCase) selects it too; the environment wins.
    cfg = load_config(base, datastore_default={"nftablesMode": "Disabled", "iptablesBackend": "NFT"})
    assert not use_nftables(cfg) and cfg.iptables_backend == "NFT"
    assert use_nftables(load_config({**base, "FELIX_NFTABLESMODE": "Enabled"},
                                    datastore_default={"nftablesMode": "Disabled"}))


def test_explicit_backend_setting() -> None:
    assert detect_backend("Legacy") == "legacy"
    assert detect_backend("NFT") == "nft"
    assert detect_backend("auto") in ("legacy", "nft")


# -- against the kernel ----------------------------------------------------------------------------

KUBE_SCRIPT = """*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp has no endpoints" -m tcp --dport 53 -j REJECT --reject-with icmp-port-unreachable
-I FORWARD 1 -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
"""


def restore(variant: str, script: str) -> None:
    subprocess.run([_cmd(variant, 4, "restore"), "--noflush", "--wait", "10"], input=script, text=True,
                   check=True, capture_output=True)


def kube_state(variant: str) -> dict[str, list[str]]:
    """KUBE-* chains and the built-in rules that jump to them."""
    saved = parse_save(save_text(variant, 4))
    out: dict[str, list[str]] = {}
    for table, st in saved.items():
        for chain, lines in st.chains.items():
            if chain.startswith("KUBE-"):
                out[f"{table}/{chain}"] = lines
            elif chain.isupper():
                jumps = [line for line in lines if "-j KUBE-" in line]
                if jumps:
                    out[f"{table}/{chain}"] = jumps
    return out


def remove_kube(variant: str) -> None:
    saved = parse_save(save_text(variant, 4))
    script: list[str] = []
    for table, st in saved.items():
        kube = [c for c in st.chains if c.startswith("KUBE-")]
        deletes = ["-D" + line[2:] for c, lines in st.chains.items() if not c.startswith("KUBE-")
                   for line in lines if "-j KUBE-" in line]
        if kube or deletes:
            script += [f"*{table}", *(f":{c} - [0:0]" for c in kube), *deletes, *(f"-X {c}" for c in kube),
                       "COMMIT"]
    if script:
        restore(variant, "\n".join(script) + "\n")


def builtin(variant: str, table: str, chain: str) -> list[str]:
    return parse_save(save_text(variant, 4)).get(table).chains.get(chain, [])  # type: ignore[union-attr]


def wait_for(cond: Callable[[], bool], timeout: float = 8.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def deny_x(c: Cluster) -> dict:  # type: ignore[type-arg]
    return c.k8s_policy("x", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})


def assert_deny_x(c: Cluster, title: str) -> None:
    result = c.probe_matrix(lambda s, d, proto, port: d.ns != "x", (("tcp", 80), ("udp", 81)))
    assert not result.wrong, result.describe(title) + "\n--- Felix log ---\n" + c.felix.log_tail(40)


@pytest.fixture
def back_to_nftables(cluster: Cluster) -> Iterator[Cluster]:
    try:
        yield cluster
    finally:
        cluster.use_dataplane("nftables")


@pytest.mark.etcd
@pytest.mark.netns
@pytest.mark.parametrize("backend,insert_mode", [("NFT", "Insert"), ("Legacy", "Append")])
def test_coexistence_with_kube_proxy_chains(back_to_nftables: Cluster, backend: str, insert_mode: str) -> None:
    c = back_to_nftables
    variant = backend.lower()
    try:
        restore(variant, KUBE_SCRIPT)
        before = kube_state(variant)
        c.use_dataplane("iptables", FELIX_IPTABLESBACKEND=backend, FELIX_CHAININSERTMODE=insert_mode)
        c.set_policies([deny_x(c)])
        assert_deny_x(c, f"{backend}: with kube-proxy chains")
        assert kube_state(variant) == before, "Felix changed kube-proxy's chains"
        forward = builtin(variant, "filter", "FORWARD")
        ours = [i for i, line in enumerate(forward) if "-j cali-FORWARD" in line]
        kube = [i for i, line in enumerate(forward) if "-j KUBE-FORWARD" in line]
        assert len(ours) == 1 and len(kube) == 1, forward
        assert (ours[0] < kube[0]) == (insert_mode == "Insert"), forward
        assert any("-j cali-POSTROUTING" in line for line in builtin(variant, "nat", "POSTROUTING"))

        # kube-proxy re-syncs: rewrites its chains and puts its jump back on top.
        restore(variant, "\n".join(line for line in KUBE_SCRIPT.splitlines()
                                   if not line.startswith("-I ")) + "\n")
        restore(variant, "*filter\n-D FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n"
                "-I FORWARD 1 -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\nCOMMIT\n")
        if insert_mode == "Insert":  # Felix moves its jump back above theirs on refresh
            wait_for(lambda: "-j cali-FORWARD" in builtin(variant, "filter", "FORWARD")[0])
        assert_deny_x(c, f"{backend}: after kube-proxy rewrote its chains")
        assert sorted(kube_state(variant)) == sorted(before)

        # Drift: someone flushes one of our chains and deletes our jump: repaired.
        subprocess.run([f"iptables-{variant}", "-w", "5", "-F", "cali-FORWARD"], check=True, capture_output=True)
        jump = next(line for line in builtin(variant, "filter", "INPUT") if "-j cali-INPUT" in line)
        restore(variant, "*filter\n-D" + jump[2:] + "\nCOMMIT\n")
        took = wait_for(lambda: len(parse_save(save_text(variant, 4))["filter"].chains.get("cali-FORWARD", [])) >= 1
                        and any("-j cali-INPUT" in line for line in builtin(variant, "filter", "INPUT")))
        assert_deny_x(c, f"{backend}: after drift repair ({took:.1f}s)")
        assert sorted(kube_state(variant)) == sorted(before)
    finally:
        remove_kube(variant)


@pytest.mark.etcd
@pytest.mark.netns
def test_switching_back_ends_removes_the_old_rules(back_to_nftables: Cluster) -> None:
    c = back_to_nftables
    c.use_dataplane("iptables", FELIX_IPTABLESBACKEND="Legacy")
    c.set_policies([deny_x(c)])
    assert "filter/cali-FORWARD" in cali_chains("legacy") and not cali_chains("nft")
    assert {"cali40all-ipam-pools", "cali40masq-ipam-pools"} <= cali_ipsets()
    assert not nft_table_exists(c.table)
    assert_deny_x(c, "iptables legacy")

    c.use_dataplane("iptables", FELIX_IPTABLESBACKEND="NFT")
    assert not cali_chains("legacy") and "filter/cali-FORWARD" in cali_chains("nft")
    assert_deny_x(c, "iptables nft after legacy")

    c.use_dataplane("nftables")
    assert not cali_chains("legacy") and not cali_chains("nft") and not cali_chains("nft", 6)
    assert not cali_ipsets()
    assert nft_table_exists(c.table)
    assert_deny_x(c, "nftables after iptables")


@pytest.mark.etcd
@pytest.mark.netns
def test_conntrack_nat_outgoing_and_host_action_on_iptables(back_to_nftables: Cluster) -> None:
    """The nftables back end's conntrack, natOutgoing and
    defaultEndpointToHostAction tests, run against the iptables back end."""
    import tests.felix.test_resilience as res
    from tests.felix.harness import External

    c = back_to_nftables
    c.use_dataplane("iptables")
    res.test_conntrack_survives_allowed_recompute_and_cuts_denied(c)
    res.test_default_endpoint_to_host_action_from_felix_configuration(c)
    c.set_policies([])
    pod = c.pod("x/b")
    pool = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": f"felix-{c.uid}"},
            "spec": {"cidr": str(c.subnet), "natOutgoing": False}}
    with External(c.uid, 9100) as ext:
        try:
            c.sync(c.put(pool))
            assert pod.cmd({"cmd": "who", "target": [ext.ip, 9100]})["seen_as"] == pod.ip
            pool["spec"]["natOutgoing"] = True
            c.sync(c.put(pool))
            members = subprocess.run(["ipset", "list", "cali40masq-ipam-pools"], capture_output=True,
                                     text=True).stdout
            assert str(c.subnet) in members
            assert pod.cmd({"cmd": "who", "target": [ext.ip, 9100]})["seen_as"] == ext.host_ip
            result = c.probe_matrix(lambda s, d, p, n: True, (("tcp", 80),))
            assert not result.wrong, result.describe("natOutgoing on")
        finally:
            c.sync(c.delete("IPPool", f"felix-{c.uid}"))


def test_xtables_lock_wait_is_bounded() -> None:
    """A held xtables lock makes iptables-legacy-restore fail after
    IptablesLockTimeoutSecs instead of hanging; it works once released."""
    import fcntl
    import os

    from felix.dataplane.iptables import IptablesError, IptablesTables

    if os.geteuid() != 0:
        pytest.skip("needs root")
    tables = IptablesTables("legacy", 4, lock_timeout=1)
    with open("/run/xtables.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        with pytest.raises(IptablesError, match="lock"):
            tables.restore("*filter\nCOMMIT\n")
        assert time.monotonic() - t0 < 5
    tables.restore("*filter\nCOMMIT\n")
