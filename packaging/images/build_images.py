"""Build the pycalico container images with buildah, from scratch, as OCI archives.

    .venv/bin/python packaging/images/build_images.py [--force] [--keep N]

Prints the directory holding the archives (and nothing else) on stdout;
progress and the size table go to stderr. Images (upstream's names in
brackets):

    pycalico-node.tar   docker.io/pycalico/node:<version>   [calico/node]
    pycalico-typha.tar  docker.io/pycalico/typha:<version>  [calico/typha]
    pycalico-ctl.tar    docker.io/pycalico/ctl:<version>    [calico/ctl]

No registry is contacted: every layer is built ``FROM scratch`` out of files
of this machine (the frozen bundle, BIRD, nft, ip, busybox and the C
libraries they load), staged by :mod:`rootfs`. The three images share one
base layer (bundle + libraries), built with ``--timestamp 0`` so it is byte
for byte the same blob in each archive: containerd stores it once.

Cache: ``$PYCALICO_CACHE/images/<hash>/`` where the hash covers the bundle's
BUILD-ID (``PYCALICO_BUNDLE=<dir>`` uses a given bundle instead of running
packaging/build), every file of packaging/images/ but the docs, buildah's version and the size
and mtime of each host file named below; a hit also re-checks every host
file that was copied (the libraries too). ``$PYCALICO_CACHE/images/current``
points at the newest build. buildah's storage (driver vfs) is a throwaway
directory per build.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("PYCALICO_CACHE", "/var/cache/pycalico")
IMAGES_CACHE = os.path.join(CACHE, "images")
REFERENCE_PLUGINS_DIR = os.path.join(CACHE, "cni-plugins")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "packaging"))

from rootfs import RootFS, elf_files  # noqa: E402

BUNDLE_DIR = "/opt/pycalico"
# Programs of the bundle that get a /usr/bin link (argv[0] picks the program;
# the bootloader finds _internal/ through /proc/self/exe, so links work).
BUNDLE_LINKS = ("calico-felix", "calico-confd", "calico-typha", "calicoctl")
# The node image's host programs (with their libraries). iptables + ipset are
# for Felix's iptables data plane (FELIX_NFTABLESMODE=Disabled) and for its
# clean-up of the other back end at start; their match/target modules are
# dlopen()ed from the xtables dir.
NODE_EXECUTABLES = ("/usr/sbin/bird", "/usr/sbin/birdcl", "/usr/sbin/nft", "/usr/bin/ip",
                    "/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi", "/usr/sbin/ipset")
IPTABLES_LINKS = tuple(f"/usr/sbin/{family}{suffix}" for family in ("iptables", "ip6tables")
                       for suffix in ("", "-save", "-restore", "-nft", "-nft-save", "-nft-restore",
                                      "-legacy", "-legacy-save", "-legacy-restore"))
XTABLES_MODULES = "/usr/lib/x86_64-linux-gnu/xtables"
# Run in a chroot of each staged image after staging: a missing library fails the build.
SMOKE = {
    "base": (["/opt/pycalico/calico"], {"CNI_COMMAND": "VERSION"}, "supportedVersions"),
    "node": [(["/usr/sbin/nft", "--version"], {}, "nftables"), (["/usr/bin/ip", "-V"], {}, "iproute2"),
             (["/usr/sbin/bird", "--version"], {}, "BIRD"), (["/usr/sbin/birdcl", "-h"], {}, "Usage"),
             (["/usr/sbin/iptables", "--version"], {}, "iptables"), (["/usr/sbin/ipset", "--version"], {}, "ipset"),
             (["/usr/bin/sh", "-c", "echo ok"], {}, "ok"),
             (["/usr/bin/calico-felix", "--help"], {}, "calico-felix")],
}
BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "cat", "date", "echo", "kill", "ls", "mkdir", "ps", "rm", "sleep", "test",
                   "wget", "ping", "grep", "sed", "tail", "head", "env", "id", "pidof", "true", "false")
# Installed on the node by the installer (--plugins-dir /opt/cni/bin): the
# conflist chains portmap (and bandwidth with --bandwidth).
REFERENCE_PLUGINS = ("portmap", "bandwidth", "loopback")
IMAGES = ("node", "typha", "ctl")
REPOSITORY = "docker.io/pycalico"
ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}


def log(msg: str) -> None:
    sys.stderr.write(f"packaging/images/build: {msg}\n")
    sys.stderr.flush()


def version() -> str:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return "v" + tomllib.load(f)["project"]["version"]


def image_ref(name: str) -> str:
    return f"{REPOSITORY}/{name}:{version()}"


def buildah(work: str, *args: str, capture: bool = False) -> str:
    cmd = ["buildah", "--storage-driver", "vfs", "--root", os.path.join(work, "storage"),
           "--runroot", os.path.join(work, "run"), *args]
    tmp = os.path.join(work, "tmp")  # buildah's scratch files (default /var/tmp)
    os.makedirs(tmp, exist_ok=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, TMPDIR=tmp))
    if proc.returncode != 0:
        raise SystemExit(f"packaging/images/build: {' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}{proc.stdout[-2000:]}")
    return proc.stdout if capture else ""


# -- inputs and the cache key -------------------------------------------------------------


def host_inputs() -> list[str]:
    plugins = [os.path.join(REFERENCE_PLUGINS_DIR, p) for p in REFERENCE_PLUGINS]
    modules = [os.path.join(XTABLES_MODULES, m) for m in sorted(os.listdir(XTABLES_MODULES))]
    return [*NODE_EXECUTABLES, BUSYBOX, *plugins, *modules]


def stat_key(path: str) -> str:
    st = os.stat(path)
    return f"{path} {st.st_size} {st.st_mtime_ns}"


def input_hash(bundle: str) -> str:
    digest = hashlib.sha256()
    with open(os.path.join(bundle, "BUILD-ID")) as f:
        digest.update(f"bundle {f.read().strip()}\nversion {version()}\n".encode())
    for root, dirs, names in os.walk(HERE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if not n.endswith(".md")):  # docs do not change images
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest.update(os.path.relpath(path, HERE).encode() + b"\0" + hashlib.sha256(f.read()).digest())
    digest.update(subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.encode())
    for path in host_inputs():
        digest.update(stat_key(path).encode() + b"\n")
    return digest.hexdigest()[:16]


def cache_valid(directory: str) -> bool:
    """All archives there and every host file they were made of unchanged."""
    try:
        with open(os.path.join(directory, "images.json")) as f:
            meta = json.load(f)
        return all(os.path.isfile(os.path.join(directory, i["archive"])) for i in meta["images"]) and all(
            os.path.exists(p) and stat_key(p) == key for p, key in meta["host_files"].items())
    except (OSError, ValueError, KeyError):
        return False


# -- staging ---------------------------------------------------------------------------------


def stage_base(bundle: str, root: str) -> RootFS:
    fs = RootFS(root)
    fs.copy_tree(bundle, BUNDLE_DIR)
    internal = os.path.join(bundle, "_internal")
    # The bundle's own libraries stay in _internal; glibc & co. come from here.
    # The bootloader itself starts without LD_LIBRARY_PATH (it sets it for
    # its re-exec): its libraries (libz) must be on the system path.
    executable = os.path.join(bundle, "calico")
    fs.add_executables([executable], skip_under=bundle)
    fs.add_executables([p for p in elf_files(bundle) if p != executable], library_path=internal, skip_under=bundle)
    for name in BUNDLE_LINKS:
        fs.symlink(f"/usr/bin/{name}", f"{BUNDLE_DIR}/{name}")
    for path, text in ETC.items():
        fs.write(path, text)
    fs.mkdir("tmp", 0o1777)
    fs.mkdir("run", 0o755)
    fs.symlink("/var/run", "../run")
    fs.mkdir("root", 0o700)
    return fs


def stage_node(root: str) -> RootFS:
    fs = RootFS(root)
    modules = [os.path.join(XTABLES_MODULES, m) for m in sorted(os.listdir(XTABLES_MODULES))]
    fs.add_executables([*NODE_EXECUTABLES, *modules])
    for link in IPTABLES_LINKS:  # through /etc/alternatives, as installed here
        if os.path.lexists(link):
            fs.add_host_path(link)
    fs.add_host_path(BUSYBOX)
    for applet in BUSYBOX_APPLETS:
        fs.symlink(f"/usr/bin/{applet}", "busybox")
    fs.copy(os.path.join(HERE, "node", "start-calico-node"), "/usr/local/bin/start-calico-node", 0o755)
    for plugin in REFERENCE_PLUGINS:
        src = os.path.join(REFERENCE_PLUGINS_DIR, plugin)
        fs.copy(src, f"/opt/cni/bin/{plugin}", 0o755)
        fs.host_files.add(src)
    for d in ("etc/calico/confd/config", "var/lib/calico", "var/log/calico", "etc/cni/net.d"):
        fs.mkdir(d)
    return fs


# -- build -------------------------------------------------------------------------------------


def smoke_test(context: str) -> None:
    """Run each image's programs in a chroot of its layers (an overlay of the
    staged dirs, in a private mount namespace with /proc): a library the
    staging missed fails here, not in a container."""
    import shlex

    lines = ["set -e", f"cd {shlex.quote(context)}"]
    for image, layers in (("base", ""), ("node", "node:base")):
        merged = f"merged-{image}" if layers else image
        if layers:  # a read-only overlay needs two lower dirs or more
            lines += [f"mkdir -p {merged}", f"mount -t overlay overlay -o lowerdir={layers} {merged}"]
        lines.append(f"mount -t proc proc {merged}/proc")
        checks = SMOKE[image] if isinstance(SMOKE[image], list) else [SMOKE[image]]
        for argv, env, expect in checks:  # type: ignore[misc]
            cmd = " ".join(shlex.quote(a) for a in argv)
            envs = " ".join(f"{k}={v}" for k, v in env.items())
            lines.append(f"out=$(env -i PATH=/usr/sbin:/usr/bin {envs} chroot {merged} {cmd} "
                         f"</dev/null 2>&1) || true")
            lines.append(f'case "$out" in *{shlex.quote(expect)}*) ;; '
                         f'*) echo "{image}: {cmd}: $out" >&2; exit 1 ;; esac')
        lines.append(f"umount {merged}/proc")
        if layers:
            lines.append(f"umount {merged}")
    os.makedirs(os.path.join(context, "base", "proc"), exist_ok=True)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"packaging/images/build: smoke test failed: {proc.stderr[-3000:]}")


def archive_sizes(path: str) -> dict[str, int]:
    """Sizes read from the archive: the file, its layers gzipped (as pulled)
    and unpacked (gzip's own length field)."""
    import tarfile

    with tarfile.open(path) as tar:
        def blob(digest: str) -> tarfile.TarInfo:
            return tar.getmember(f"blobs/sha256/{digest.split(':', 1)[1]}")

        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(blob(index["manifests"][0]["digest"])))  # type: ignore[arg-type]
        gzipped = unpacked = own = 0
        for layer in manifest["layers"]:
            member = blob(layer["digest"])
            data = tar.extractfile(member)
            assert data is not None
            data.seek(member.size - 4)
            size = int.from_bytes(data.read(4), "little") if layer["mediaType"].endswith("gzip") else member.size
            gzipped += layer["size"]
            unpacked += size
            own = size
    return {"archive_bytes": os.path.getsize(path), "gzipped_bytes": gzipped, "unpacked_bytes": unpacked,
            "own_layer_bytes": own, "layer_count": len(manifest["layers"])}


def build_all(bundle: str, out: str, work: str) -> dict[str, object]:
    context = os.path.join(work, "context")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    base = stage_base(bundle, os.path.join(context, "base"))
    node = stage_node(os.path.join(context, "node"))
    timings["stage"] = time.monotonic() - t0
    t = time.monotonic()
    smoke_test(context)
    timings["smoke"] = time.monotonic() - t
    host_files = {p: stat_key(p) for p in sorted(base.host_files | node.host_files) if not p.startswith(bundle)}

    common = ["--format", "oci", "--timestamp", "0", "--pull=never", "--quiet",
              "--label", f"org.opencontainers.image.version={version()}",
              "--label", f"io.pycalico.bundle={open(os.path.join(bundle, 'BUILD-ID')).read().strip()}"]
    t = time.monotonic()
    buildah(work, "bud", *common, "-f", os.path.join(HERE, "base", "Containerfile"),
            "-t", "localhost/pycalico-base:build", context)
    timings["base"] = time.monotonic() - t
    images = []
    for name in IMAGES:
        t = time.monotonic()
        tag = f"localhost/pycalico-{name}:build"
        buildah(work, "bud", *common, "-f", os.path.join(HERE, name, "Containerfile"), "-t", tag, context)
        archive = f"pycalico-{name}.tar"
        ref = image_ref(name)
        buildah(work, "push", "--quiet", "--disable-compression", "--format", "oci", tag,
                f"oci-archive:{os.path.join(out, archive)}:{ref}")
        timings[name] = time.monotonic() - t
        images.append({"name": f"pycalico-{name}", "ref": ref, "archive": archive,
                       **archive_sizes(os.path.join(out, archive))})
    return {"images": images, "host_files": host_files, "timings": timings}


def print_sizes(meta: dict[str, object]) -> None:
    mb = 1024 * 1024
    log(f"{'image':<15} {'reference':<32} {'archive':>8} {'unpacked':>9} {'own layer':>10}  (MB)")
    for image in meta["images"]:  # type: ignore[attr-defined]
        log(f"{image['name']:<15} {image['ref']:<32} {image['archive_bytes'] / mb:>8.1f} "
            f"{image['unpacked_bytes'] / mb:>9.1f} {image['own_layer_bytes'] / mb:>10.1f}")
    log("all three share the base layer (bundle + libraries): containerd stores it once")


def prune(keep: int, current: str) -> None:
    entries = []
    for name in os.listdir(IMAGES_CACHE):
        path = os.path.join(IMAGES_CACHE, name)
        if not name.startswith(".") and name != "current" and os.path.isdir(path) and not os.path.islink(path):
            entries.append((os.path.getmtime(path), path))
    for mtime, path in sorted(entries, reverse=True)[keep:]:
        if path != current and time.time() - mtime > 3600:
            shutil.rmtree(path, ignore_errors=True)


def build(force: bool = False, keep: int = 2) -> str:
    from build_bundle import build as build_bundle

    start = time.monotonic()
    bundle = os.path.realpath(os.environ["PYCALICO_BUNDLE"]) if os.environ.get("PYCALICO_BUNDLE") else build_bundle()
    os.makedirs(IMAGES_CACHE, exist_ok=True)
    digest = input_hash(bundle)
    target = os.path.join(IMAGES_CACHE, digest)
    with open(os.path.join(IMAGES_CACHE, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions build once
        if force or not cache_valid(target):
            shutil.rmtree(target, ignore_errors=True)
            work = os.path.join(IMAGES_CACHE, f".work-{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            staged = os.path.join(work, "out")
            os.makedirs(staged)
            try:
                meta = build_all(bundle, staged, work)
                meta["hash"] = digest
                meta["seconds"] = round(time.monotonic() - start, 1)
                with open(os.path.join(staged, "images.json"), "w") as f:
                    json.dump(meta, f, indent=1)
                os.rename(staged, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            log(f"built {target} in {meta['seconds']}s "
                f"({', '.join(f'{k} {v:.1f}s' for k, v in meta['timings'].items())})")  # type: ignore[union-attr]
        else:
            os.utime(target)
            with open(os.path.join(target, "images.json")) as f:
                meta = json.load(f)
            log(f"up to date: {target} ({time.monotonic() - start:.1f}s)")
        tmp = os.path.join(IMAGES_CACHE, f".current-{os.getpid()}")
        os.symlink(digest, tmp)
        os.replace(tmp, os.path.join(IMAGES_CACHE, "current"))
        prune(keep, target)
    print_sizes(meta)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild although nothing changed")
    parser.add_argument("--keep", type=int, default=2, help="image builds to keep in the cache")
    args = parser.parse_args()
    print(build(args.force, max(1, args.keep)))


if __name__ == "__main__":
    main()
