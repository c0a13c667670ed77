"""The CNI fast path: shim + node service against the standalone executables."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from datastore.keys import ListOptions
from tests.cni.test_plugin import BAD_INPUTS, allocations, endpoints, handles, k8s_args
from tests.fastpath.conftest import PYTHON, ServiceProcess
from tests.support.cni_exec import REPO, exec_plugin
from tests.support.netns import Netns, cali_links

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


def _normalise(result: dict[str, Any]) -> dict[str, Any]:
    """The container MAC is random per veth; everything else must match."""
    out = json.loads(json.dumps(result))
    for iface in out.get("interfaces", []):
        if iface.get("sandbox"):
            iface["mac"] = "<random>"
    return out


def test_socket_is_root_only(cni_service: ServiceProcess) -> None:
    mode = os.stat(cni_service.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_add_check_del_identical_on_both_paths(calico, standalone, netconf, etcd_backend) -> None:  # type: ignore[no-untyped-def]
    outputs: dict[str, list[tuple[int, str]]] = {}
    # Same netns and a requested address (IP=): the results can match byte for byte,
    # but for the container's random MAC.
    with Netns() as ns:
        for name, call in (("standalone", standalone), ("service", calico)):
            kw = dict(container_id="same-cid-0001", netns=ns.path, cni_args=k8s_args("same") + ";IP=10.123.50.5")
            add = call("ADD", netconf, **kw)
            assert add.ok, add.stdout + add.stderr
            again = call("ADD", netconf, **kw)
            check = call("CHECK", {**netconf, "prevResult": add.json}, **kw)
            bad_prev = {**add.json, "ips": [{"address": "10.9.9.9/32", "interface": 1}]}
            bad_check = call("CHECK", {**netconf, "prevResult": bad_prev}, **kw)
            dele = call("DEL", netconf, **kw)
            dele2 = call("DEL", netconf, **kw)
            outputs[name] = [
                (add.returncode, json.dumps(_normalise(add.json))),
                (again.returncode, json.dumps(_normalise(again.json))),
                (check.returncode, check.stdout),
                (bad_check.returncode, bad_check.stdout),
                (dele.returncode, dele.stdout),
                (dele2.returncode, dele2.stdout),
            ]
            assert allocations(etcd_backend) == [] and handles(etcd_backend) == [] and endpoints(etcd_backend) == []
    assert outputs["standalone"] == outputs["service"]
    assert "10.123.50.5/32" in outputs["service"][0][1]
    assert outputs["service"][3][0] == 1 and json.loads(outputs["service"][3][1])["code"] == 105


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_errors_byte_for_byte(case, netconf, cni_path, cni_service, etcd_backend, datastore) -> None:  # type: ignore[no-untyped-def]
    _, env, change, _code = case
    if change == "UNREACHABLE":
        change = datastore.unreachable
    with Netns() as ns:
        if isinstance(change, bytes):
            conf: Any = change
        else:
            conf = {**netconf}
            for k, v in (change or {}).items():
                if v is None:
                    conf.pop(k, None)
                else:
                    conf[k] = v
        base = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bad-input-cid", "CNI_NETNS": ns.path,
                "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": cni_path, **env}
        got = {}
        for name, sock in (("standalone", "none"), ("service", cni_service.socket)):
            res = exec_plugin(cni_path, "calico", base["CNI_COMMAND"], conf, container_id=base["CNI_CONTAINERID"],
                              netns=base["CNI_NETNS"], ifname=base["CNI_IFNAME"], cni_args=base["CNI_ARGS"],
                              extra_env={**base, "PYCALICO_CNI_SOCKET": sock})
            got[name] = (res.returncode, res.stdout)
    assert got["standalone"] == got["service"]
    assert got["service"][0] != 0 and json.loads(got["service"][1])["code"] == case[3]
    assert allocations(etcd_backend) == []


def test_calico_ipam_executable_uses_the_service(netconf, cni_path, cni_service, etcd_backend) -> None:  # type: ignore[no-untyped-def]
    kw = dict(container_id="ipam-direct-1", netns="/var/run/netns/none")
    before = cni_service.served()
    add = exec_plugin(cni_path, "calico-ipam", "ADD", netconf, extra_env=cni_service.env, **kw)
    assert add.ok, add.stdout + add.stderr
    assert cni_service.served() == before + 1
    assert add.json["ips"][0]["address"].split("/")[1] == "26"  # the block's mask, as upstream
    assert len(allocations(etcd_backend)) == 1
    dele = exec_plugin(cni_path, "calico-ipam", "DEL", netconf, extra_env=cni_service.env, **kw)
    assert dele.ok and dele.stdout == ""
    assert allocations(etcd_backend) == []


_IMPORT_PROBE = """
import atexit, sys
def report():
    sys.stderr.write("\\nMODULES=" + ",".join(sorted(sys.modules)) + "\\n")
atexit.register(report)
sys.argv = ["calico"]
from cni.main import main
main()
"""


def test_shim_imports_only_the_stdlib(netconf, cni_path, cni_service) -> None:  # type: ignore[no-untyped-def]
    with Netns() as ns:
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "shim-imports",
               "CNI_NETNS": ns.path, "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": cni_path,
               **cni_service.env}
        proc = subprocess.run([PYTHON, "-c", _IMPORT_PROBE], input=json.dumps(netconf).encode(), env=env,
                              cwd=REPO, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        modules = set(proc.stderr.decode().rsplit("MODULES=", 1)[1].strip().split(","))
        for heavy in ("pyroute2", "pydantic", "grpc", "requests", "kubernetes", "etcd3gw", "urllib3",
                      "datastore", "cni.plugin", "cni.netconf", "ipam.plugin"):
            assert not any(m == heavy or m.startswith(heavy + ".") for m in modules), heavy
        assert exec_plugin(cni_path, "calico", "DEL", netconf, container_id="shim-imports", netns=ns.path,
                           extra_env=cni_service.env).ok


def test_standalone_when_socket_missing_stale_or_silent(standalone, netconf, cni_path, etcd_backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Missing socket path.
    missing = "/tmp/pcf-missing-" + os.urandom(4).hex() + ".sock"
    # Stale socket: a file that nobody listens on (connection refused).
    stale = f"/tmp/pcf-stale-{os.urandom(4).hex()}.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    # Silent: listens (the kernel completes connects) but never accepts or answers.
    silent = f"/tmp/pcf-silent-{os.urandom(4).hex()}.sock"
    quiet = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    quiet.bind(silent)
    quiet.listen(8)
    try:
        for path in (missing, stale, silent):
            env = {"PYCALICO_CNI_SOCKET": path, "PYCALICO_CNI_SOCKET_TIMEOUT": "0.3"}
            with Netns() as ns:
                kw = dict(container_id="fallback-1", netns=ns.path, extra_env=env)
                add = exec_plugin(cni_path, "calico", "ADD", netconf, **kw)
                assert add.ok, (path, add.stdout, add.stderr[-2000:])
                assert exec_plugin(cni_path, "calico", "DEL", netconf, **kw).ok
    finally:
        quiet.close()
        for path in (stale, silent):
            os.unlink(path)
    assert allocations(etcd_backend) == [] and endpoints(etcd_backend) == []


def test_kill_service_during_20_concurrent_adds(netconf, cni_path, own_service, etcd_backend) -> None:  # type: ignore[no-untyped-def]
    own_service.start()
    n = 20
    namespaces = [Netns(prefix="pkl") for _ in range(n)]
    for ns in namespaces:
        ns.__enter__()
    cids = [f"kill-{i:02d}-{os.urandom(3).hex()}" for i in range(n)]
    try:
        def add(i: int):  # type: ignore[no-untyped-def]
            return exec_plugin(cni_path, "calico", "ADD", netconf, container_id=cids[i], netns=namespaces[i].path,
                               cni_args=k8s_args(f"kp{i}"), extra_env=own_service.env)

        def killer() -> None:
            # Kill once the service has requests in hand (20 interpreters starting on a
            # small machine take a while to reach the socket).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    from cni.service import stats

                    if stats(own_service.socket, 0.2).get("inflight", 0) >= 2:
                        break
                except OSError:
                    pass
                time.sleep(0.01)
            own_service.kill()

        thread = threading.Thread(target=killer)
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(add, i) for i in range(n)]
            thread.start()
            results = [f.result() for f in futures]
        thread.join()

        ok, failed = [], []
        for i, res in enumerate(results):
            doc = json.loads(res.stdout)  # every answer is exactly one JSON document
            if res.ok:
                ok.append((i, doc))
            else:
                assert isinstance(doc.get("code"), int) and doc.get("msg"), doc
                failed.append((i, doc))
        codes = sorted({d["code"] for _, d in failed})
        print(f"\n{len(ok)} ADDs succeeded, {len(failed)} failed cleanly (codes {codes})")
        assert failed, "the kill came too late to hit any request"
        addresses = [a["address"] for _, d in ok for a in d["ips"]]
        assert len(addresses) == len(set(addresses)), "duplicate address"
        # The service is gone. GC (standalone now) with the survivors as the valid
        # attachments leaves exactly their endpoints and addresses ...
        gc_conf = {**netconf, "cniVersion": "1.1.0",
                   "cni.dev/valid-attachments": [{"containerID": cids[i], "ifname": "eth0"} for i, _ in ok]}
        res = exec_plugin(cni_path, "calico", "GC", gc_conf, extra_env=own_service.env)
        assert res.ok, res.stdout + res.stderr
        assert len(allocations(etcd_backend)) == len(addresses)
        assert len(endpoints(etcd_backend)) == len(ok)
        # ... and the runtime's DEL of each failed ADD removes what the dataplane kept.
        for i, _ in failed:
            res = exec_plugin(cni_path, "calico", "DEL", netconf, container_id=cids[i], netns=namespaces[i].path,
                              cni_args=k8s_args(f"kp{i}"), extra_env=own_service.env)
            assert res.ok, res.stdout + res.stderr
        # The agent comes back: the survivors' DELs go through it again.
        own_service.start()
        for i, _ in ok:
            res = exec_plugin(cni_path, "calico", "DEL", netconf, container_id=cids[i], netns=namespaces[i].path,
                              cni_args=k8s_args(f"kp{i}"), extra_env=own_service.env)
            assert res.ok, res.stdout + res.stderr
    finally:
        for ns in namespaces:
            ns.delete()
    assert allocations(etcd_backend) == []
    assert handles(etcd_backend) == []
    assert endpoints(etcd_backend) == []
    assert not {link for link in cali_links() if link.startswith("calikill-")}
    assert etcd_backend.list(ListOptions("WorkloadEndpoint")).items == []


def test_add_del_via_service_on_the_kubernetes_datastore(request, tmp_path, cni_path, cni_service, node) -> None:  # type: ignore[no-untyped-def]
    """The service's per-request batched read is an etcd feature; on the
    Kubernetes datastore its reads go one by one (and still give the same result)."""
    from tests.kubernetes.fixtures import make_datastore
    from tests.support.pools import create_pool

    ds = make_datastore("kubernetes", request, str(tmp_path))
    try:
        create_pool(ds.backend, "kdd-fast-pool", "10.126.0.0/16")
        conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", **ds.netconf,
                "nodename": node, "log_level": "debug", "log_file_path": str(tmp_path / "cni.log"),
                "ipam_lock_file": str(tmp_path / "ipam.lock"), "ipam": {"type": "calico-ipam"}}
        cni_args = k8s_args("kdd-fast")
        ds.prepare_from_cni_args(cni_args, node)
        with Netns() as ns:
            kw = dict(container_id=f"kddfast{os.urandom(3).hex()}", netns=ns.path, cni_args=cni_args,
                      extra_env=cni_service.env)
            before = cni_service.served()
            add = exec_plugin(cni_path, "calico", "ADD", conf, **kw)
            assert add.ok, add.stdout + add.stderr
            assert add.json["ips"][0]["address"].startswith("10.126.")
            assert exec_plugin(cni_path, "calico", "DEL", conf, **kw).ok
            assert cni_service.served() == before + 2
        assert allocations(ds.backend) == [] and handles(ds.backend) == []
    finally:
        ds.cleanup()


def test_etcd_requests_per_add_and_del(netconf, cni_path, cni_service, etcd_server) -> None:  # type: ignore[no-untyped-def]
    """The service's ADD and DEL cost 5 and 4 etcd requests (standalone: 13 and
    8 before the batched reads and two-key transactions), counted by etcd
    itself; a regression here is a round trip added to every pod."""
    from tests.support.etcd_server import kv_requests as etcd_requests

    with Netns() as ns:
        kw = dict(container_id=f"rtt{os.urandom(3).hex()}", netns=ns.path, cni_args=k8s_args("rtt"),
                  extra_env=cni_service.env)
        assert exec_plugin(cni_path, "calico", "ADD", netconf, **kw).ok  # warm: pools, block claimed
        assert exec_plugin(cni_path, "calico", "DEL", netconf, **kw).ok
        counts = {}
        for command in ("ADD", "DEL"):
            before = etcd_requests(etcd_server.endpoint)
            res = exec_plugin(cni_path, "calico", command, netconf, **kw)
            assert res.ok, res.stdout + res.stderr
            counts[command] = etcd_requests(etcd_server.endpoint) - before
    print(f"\netcd requests via the service: {counts}")
    assert counts["ADD"] <= 5 and counts["DEL"] <= 4, counts
