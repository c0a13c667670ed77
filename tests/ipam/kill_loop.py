"""An allocation loop to be killed with SIGKILL at random points (test helper).

Acts like a node's CNI runtime + calico plugin, in one process so a kill can
land anywhere inside the IPAM protocol: ADD (calico-ipam's cmd_add) then write
the WorkloadEndpoint; DEL deletes the WorkloadEndpoint then releases (cmd_del).
Journal lines (appended, flushed): ``ipam <cid> <ip>...`` as soon as the IPAM
ADD returned; ``add <cid>`` once the endpoint is written too (the runtime's
view: the attachment exists); ``del <cid>`` once the runtime decides to
delete, before anything is removed. Prints ``ready`` once imports are done.

usage: python -m tests.ipam.kill_loop <etcd endpoint> <node> <journal> <tmpdir> <seed>
"""
from __future__ import annotations

import json
import os
import random
import sys
import uuid


def main() -> None:
    endpoint, node, journal_path, tmp, seed = sys.argv[1:6]
    rng = random.Random(int(seed))

    from cni.skel import CmdArgs
    from datastore.etcd import EtcdBackend
    from ipam import allocator, plugin, release  # noqa: F401 - imported before "ready"
    from tests.ipam.helpers import create_wep, delete_wep

    backend = EtcdBackend(endpoint)
    conf = {
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "etcd_endpoints": endpoint, "nodename": node,
        "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
        "log_file_path": os.path.join(tmp, "kill-loop.log"), "log_level": "warning",
        "ipam": {"type": "calico-ipam", "release_empty_blocks": "true"},
    }
    live: list[str] = []
    with open(journal_path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "add":
                live.append(parts[1])
            elif parts and parts[0] == "del" and parts[1] in live:
                live.remove(parts[1])
    journal = open(journal_path, "a", encoding="utf-8")
    print("ready", flush=True)

    def args(command: str, cid: str) -> CmdArgs:
        return CmdArgs(command, cid, "/var/run/netns/x" if command == "ADD" else "", "eth0", "",
                       ["/opt/cni/bin"], json.dumps(conf).encode(), dict(conf))

    while True:
        if live and (rng.random() < 0.4 or len(live) > 40):
            cid = live.pop(rng.randrange(len(live)))
            journal.write(f"del {cid}\n")
            journal.flush()
            delete_wep(backend, node, cid)
            plugin.cmd_del(args("DEL", cid))
        else:
            cid = "k" + uuid.uuid4().hex[:12]
            result = plugin.cmd_add(args("ADD", cid))
            addresses = [ip["address"] for ip in result["ips"]]
            journal.write(f"ipam {cid} {' '.join(addresses)}\n")
            journal.flush()
            create_wep(backend, node, cid, addresses)
            journal.write(f"add {cid}\n")
            journal.flush()
            live.append(cid)


if __name__ == "__main__":
    main()
