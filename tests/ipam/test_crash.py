"""kill -9 an allocation loop at random points: nothing corrupt, nothing
handed out twice, every leak found by the checker and released by GC."""
from __future__ import annotations

import ipaddress
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from datastore.keys import ListOptions
from datastore.models.ipam import AllocationBlock
from ipam import blocks as blk
from ipam.checker import check
from tests.ipam.conftest import NETWORK, IPAMEnv
from tests.ipam.helpers import allocations, create_wep, delete_wep, handles
from tests.support.cni_exec import REPO
from tests.support.pools import create_pool

pytestmark = pytest.mark.etcd

KILLS = 24
NODE = "node-k"


def _replay(journal: str) -> tuple[set[str], dict[str, list[str]]]:
    """Replay the journal: fail if an address was handed out while another
    container held it; return the live attachments and every container's IPs."""
    held: dict[str, str] = {}  # ip -> cid
    ips_of: dict[str, list[str]] = {}
    live: set[str] = set()
    with open(journal, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            kind, cid = parts[0], parts[1]
            if kind == "ipam":
                ips = [str(ipaddress.ip_interface(a).ip) for a in parts[2:]]
                for ip in ips:
                    assert ip not in held, f"journal line {n}: {ip} handed to {cid} while {held[ip]} holds it"
                    held[ip] = cid
                ips_of[cid] = ips
            elif kind == "add":
                live.add(cid)
            elif kind == "del":
                live.discard(cid)
                for ip in ips_of.get(cid, []):
                    held.pop(ip, None)
    return live, ips_of


def test_kill_9_allocation_loop(ipam_env: IPAMEnv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if ipam_env.datastore.is_kubernetes:
        pytest.skip("tests.ipam.kill_loop drives etcd only")
    backend = ipam_env.backend
    create_pool(backend, "pool-k", "10.42.0.0/22", blockSize=30)  # many small blocks: many claims
    journal = str(tmp_path / "journal")
    open(journal, "w").close()
    rng = random.Random(4242)
    kills = 0
    for round_ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ipam.kill_loop", ipam_env.endpoint, NODE, journal, str(tmp_path),
             str(round_)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready and proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()[-3000:]
            time.sleep(rng.uniform(0.01, 0.8))
            assert proc.poll() is None, "the loop died by itself:\n" + proc.stderr.read().decode()[-3000:]
            proc.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
    assert kills >= 20

    # No address was ever handed out twice.
    live, ips_of = _replay(journal)
    assert ips_of, "the loop never completed an ADD"

    # No block is corrupt.
    for kv in backend.list(ListOptions(kind="Block")).items:
        block = AllocationBlock.from_dict(kv.value)
        assert blk.check_block(block) == [], (block.cidr, blk.check_block(block))

    # The runtime drops endpoints of attachments it never saw succeed.
    for kv in backend.list(ListOptions(kind="WorkloadEndpoint")).items:
        cid = kv.value["spec"]["containerID"]
        if cid not in live:
            delete_wep(backend, NODE, cid)

    live_handles = {f"{NETWORK}.{cid}" for cid in live}
    allocated = allocations(backend)
    all_handles = set(handles(backend)) | {h for _, h, _ in allocated.values() if h}
    leaked = all_handles - live_handles

    report = check(backend)
    assert not report.corrupt_blocks and not report.duplicate_ips and not report.missing_handles
    assert not report.in_use_not_allocated, report.in_use_not_allocated
    assert report.suspect_handles() == leaked, (report.details(), leaked)
    print(f"\n{kills} kills: {len(live)} live attachments, {len(leaked)} leaked handles "
          f"({len(report.leaked_ips)} leaked IPs, {len(report.leaked_handles)} handles without IPs, "
          f"{len(report.refcount_mismatches)} counts out of step), "
          f"{len(report.stale_affinities)} interrupted affinity changes")

    # GC with the runtime's valid attachments releases every leak.
    conf = ipam_env.conf(node=NODE, cni_version="1.1.0")
    conf["ipam_lock_file"] = os.path.join(str(tmp_path), "ipam.lock")
    conf["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": "eth0"} for cid in sorted(live)]
    result = ipam_env.run("GC", conf)
    assert result.ok and result.stdout == "", result.stdout + result.stderr[-2000:]

    report = check(backend)
    assert report.ok, report.details()
    assert set(handles(backend)) == live_handles
    expected_ips = sorted(ip for cid in live for ip in ips_of[cid])
    assert sorted(allocations(backend)) == expected_ips


def test_every_interrupted_step_is_detected_and_recovered(ipam_env: IPAMEnv) -> None:
    """The states a crash can leave between two writes, made directly."""
    from ipam import handles as handle_ops
    from ipam.allocator import Allocator
    from ipam.claim import PENDING
    from ipam.store import Store

    backend = ipam_env.backend
    store = Store(backend)
    create_pool(backend, "pool-c", "10.50.0.0/24", blockSize=28)
    node = "node-c"
    # 4. Release interrupted after the block write, before the handle decrement.
    Allocator(backend, node).auto_assign(4, f"{NETWORK}.half", {"node": node})
    used = next(iter(handles(backend)[f"{NETWORK}.half"]))
    current = store.get_block(used)
    blk.release_handle(current.value, f"{NETWORK}.half")
    store.update_block(current.value, current.revision)
    free = [c for c in (f"10.50.0.{16 * i}/28" for i in range(16)) if c != used]
    # 1. Claim interrupted after the pending affinity: no block.
    store.create_affinity(node, free[0], PENDING)
    # 2. Claim interrupted before the confirmation: block exists, affinity pending.
    store.create_affinity(node, free[1], PENDING)
    store.create_block(blk.new_block(free[1], node))
    # 3. Assignment interrupted after the handle increment, before the block write.
    handle_ops.increment(store, f"{NETWORK}.gone", free[1], 1)

    report = check(backend)
    assert {(s.block, s.state) for s in report.stale_affinities} == {(free[0], "pending"), (free[1], "pending")}
    assert {h.handle_id for h in report.leaked_handles} == {f"{NETWORK}.gone", f"{NETWORK}.half"}

    # The next assignment on the node finishes the claims it meets.
    conf = ipam_env.conf(node=node)
    assert ipam_env.add("live1", conf).ok
    create_wep(backend, node, "live1", [str(ip) for ip in allocations(backend)])
    conf = ipam_env.conf(node=node, cni_version="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": "live1", "ifname": "eth0"}]
    assert ipam_env.run("GC", conf).ok
    report = check(backend)
    assert report.ok, report.details()
    assert set(handles(backend)) == {f"{NETWORK}.live1"}
