"""Container images: build time (cold / warm), archive import, and node
container start -> Felix ready, in a private containerd inside a node netns
(the layout of tests/images).

    .venv/bin/python bench/node_image.py [-n 10] [--cold]

``--cold`` first rebuilds the images with ``--force`` (the frozen bundle is
reused: ``packaging/build`` has its own cache; its time is printed by it),
then times a warm (cached) build. Each round runs the pycalico-node image
(privileged, host network, upstream's host mounts) against the fabric etcd
and times ``ctr run`` -> Felix's /readiness = 200, then kills and deletes the
container. Prints p50/p95.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.images.runtime import import_archive, run_detached, task_pid, wait_http_ok  # noqa: E402
from tests.packaging.containerd import PrivateContainerd  # noqa: E402
from tests.support.nodes import Cluster  # noqa: E402

BUILD = os.path.join(REPO, "packaging", "images", "build")


def build(*args: str) -> tuple[str, float]:
    start = time.monotonic()
    proc = subprocess.run([BUILD, *args], stdout=subprocess.PIPE, text=True, check=True)
    return proc.stdout.strip().splitlines()[-1], time.monotonic() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10, help="node container starts")
    parser.add_argument("--cold", action="store_true", help="time a forced image rebuild first")
    args = parser.parse_args()

    if args.cold:
        _, cold = build("--force")
        print(f"image build, cold (bundle cached): {cold:.1f} s")
    directory, warm = build()
    print(f"image build, warm (cache hit): {warm:.2f} s")
    archives = {name: os.path.join(directory, f"pycalico-{name}.tar") for name in ("node", "typha", "ctl")}
    for name, path in archives.items():
        print(f"pycalico-{name}: {os.path.getsize(path) / 2**20:.1f} MB archive")

    work = tempfile.mkdtemp(prefix="pycalico-imgbench-")
    host = {d: os.path.join(work, d.strip("/").replace("/", "-")) for d in (
        "/opt/cni/bin", "/etc/cni/net.d", "/var/run/calico", "/var/lib/calico", "/var/log/calico")}
    for d in host.values():
        os.makedirs(d)
    ref = "docker.io/pycalico/node:v0.1.0"
    try:
        with Cluster() as cluster:
            node = cluster.add_node("node-1")
            with PrivateContainerd(host["/opt/cni/bin"], host["/etc/cni/net.d"], netns=node.netns) as ctrd:
                start = time.monotonic()
                for name, path in archives.items():
                    import_archive(ctrd, path, f"docker.io/pycalico/{name}:v0.1.0")
                print(f"ctr images import (3 archives): {time.monotonic() - start:.1f} s")
                env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": cluster.etcd_endpoint, "NODENAME": node.name,
                       "FELIX_HEALTHENABLED": "true"}
                mounts = {d: host[d] for d in ("/var/run/calico", "/var/lib/calico", "/var/log/calico")}
                ready: list[float] = []
                for i in range(args.n):
                    name = f"bench-node-{i}"
                    start = time.monotonic()
                    run_detached(ctrd, ref, name, log_path=os.path.join(work, f"{name}.log"), mounts=mounts,
                                 privileged=True, env=env)
                    wait_http_ok(node.netns, 9099, "/readiness", 120, alive=lambda: task_pid(ctrd, name) is not None)
                    ready.append(time.monotonic() - start)
                    ctrd.ctr("tasks", "kill", "--signal", "SIGKILL", name, check=False)
                    ctrd.ctr("tasks", "delete", "--force", name, check=False)
                    ctrd.ctr("containers", "delete", name, check=False)
                print(f"node container `ctr run` -> Felix ready, n={len(ready)}: p50 {statistics.median(ready):.2f} s, "
                      f"p95 {pct(ready, 0.95):.2f} s, min {min(ready):.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
