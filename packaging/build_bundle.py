"""Build the frozen pycalico bundle with PyInstaller, cached by source hash.

    .venv/bin/python packaging/build_bundle.py [--onefile] [--force] [--keep N]

Prints the bundle directory (and nothing else) on stdout; progress goes to
stderr. The bundle lands in ``$PYCALICO_CACHE/dist/<mode>-<hash>/`` where
``<hash>`` covers every input of the build (our sources, the spec, the
installed distributions, the interpreter and PyInstaller versions), so a
rerun with nothing changed returns at once. ``$PYCALICO_CACHE/dist/current``
points at the newest onedir bundle.

Layout of a onedir bundle::

    calico          the executable (argv[0] picks the program)
    calico-ipam     -> calico
    calicoctl       -> calico
    install         -> calico      (the installer, upstream's name for it)
    calico-felix    -> calico      (node agent: Felix)
    calico-confd    -> calico      (node agent: confd + BIRD control)
    calico-typha    -> calico
    _internal/      the interpreter, libraries and modules
    manifests/      crds/ and rbac/ (the installer applies them to the API server)
    BUILD-ID        the source hash (the installer uses it to version installs)

A onefile build (``--onefile``, only for the start-up comparison in
packaging/README.md) has the same names with ``calico`` a single file.
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("PYCALICO_CACHE", "/var/cache/pycalico")
DIST = os.path.join(CACHE, "dist")
SPEC = os.path.join(REPO, "packaging", "pycalico.spec")
SOURCE_PACKAGES = ("cni", "ipam", "datastore", "calicoctl", "felix", "bird", "typha", "packaging/calico_install")
PACKAGING_FILES = ("bundle_entry.py", "pycalico.spec", "build_bundle.py")
MANIFESTS = ("crds", "rbac")  # packaging/manifests/<dir>/*.yaml -> <bundle>/manifests/<dir>/ (the installer applies them)
LINKS = ("calico-ipam", "calicoctl", "install", "calico-felix", "calico-confd", "calico-typha")
EXECUTABLE = "calico"


def log(msg: str) -> None:
    sys.stderr.write(f"packaging/build: {msg}\n")
    sys.stderr.flush()


def source_files() -> list[str]:
    files = [os.path.join(REPO, "pyproject.toml")]
    files += [os.path.join(REPO, "packaging", name) for name in PACKAGING_FILES]
    for package in SOURCE_PACKAGES:
        for root, dirs, names in os.walk(os.path.join(REPO, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    for sub in MANIFESTS:
        files += sorted(glob.glob(os.path.join(REPO, "packaging", "manifests", sub, "*.yaml")))
    return files


def copy_manifests(staged: str) -> None:
    for sub in MANIFESTS:
        target = os.path.join(staged, "manifests", sub)
        os.makedirs(target)
        for path in sorted(glob.glob(os.path.join(REPO, "packaging", "manifests", sub, "*.yaml"))):
            shutil.copy2(path, target)


def build_hash(mode: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{mode}\n{sys.version}\n".encode())
    for path in source_files():
        digest.update(os.path.relpath(path, REPO).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    # A set: with the checkout on sys.path (pytest puts it there) the editable
    # install's pycalico.egg-info is found a second time, which must not change the hash.
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()})
    digest.update("\n".join(dists).encode())
    return digest.hexdigest()[:16]


def verify(bundle: str) -> None:
    """The bundle must run with an empty environment (no venv, no PYTHONPATH)."""
    for name in (EXECUTABLE, "calico-ipam"):
        proc = subprocess.run(
            ["env", "-i", "CNI_COMMAND=VERSION", os.path.join(bundle, name)],
            input=b'{"cniVersion": "1.0.0"}', capture_output=True, timeout=60,
        )
        if proc.returncode != 0 or b"supportedVersions" not in proc.stdout:
            raise SystemExit(f"packaging/build: {name} in {bundle} does not run: "
                             f"{proc.stdout[-300:]!r} {proc.stderr[-800:]!r}")


def pyinstaller(mode: str, workdir: str) -> str:
    env = dict(os.environ, PYCALICO_REPO=REPO, PYCALICO_MODE=mode)
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", os.path.join(workdir, "dist"), "--workpath", os.path.join(workdir, "build"), SPEC]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout.decode(errors="replace")[-6000:])
        raise SystemExit(f"packaging/build: PyInstaller failed (exit {proc.returncode})")
    log(f"PyInstaller {mode} build took {time.monotonic() - start:.0f}s")
    out = os.path.join(workdir, "dist", EXECUTABLE)
    if mode == "onefile":
        staged = os.path.join(workdir, "bundle")
        os.makedirs(staged)
        os.rename(out, os.path.join(staged, EXECUTABLE))
        return staged
    return out


PRUNE_AGE = 3600.0  # seconds: a test session may still be using a bundle built or reused this recently


def prune(mode: str, keep: int, current: str) -> None:
    """Drop bundles of this mode beyond the newest ``keep`` that nobody built or reused for an hour."""
    entries = []
    for name in os.listdir(DIST):
        path = os.path.join(DIST, name)
        if name.startswith(f"{mode}-") and os.path.isdir(path) and not os.path.islink(path):
            entries.append((os.path.getmtime(path), path))
    for mtime, path in sorted(entries, reverse=True)[keep:]:
        if path != current and time.time() - mtime > PRUNE_AGE:
            shutil.rmtree(path, ignore_errors=True)


def build(mode: str = "onedir", force: bool = False, keep: int = 3) -> str:
    os.makedirs(DIST, exist_ok=True)
    digest = build_hash(mode)
    bundle = os.path.join(DIST, f"{mode}-{digest}")
    with open(os.path.join(DIST, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test sessions build once
        if force and os.path.isdir(bundle):
            shutil.rmtree(bundle)
        if not os.path.isdir(bundle):
            workdir = os.path.join(DIST, f".work-{os.getpid()}")
            shutil.rmtree(workdir, ignore_errors=True)
            os.makedirs(workdir)
            try:
                staged = pyinstaller(mode, workdir)
                for link in LINKS:
                    os.symlink(EXECUTABLE, os.path.join(staged, link))
                copy_manifests(staged)
                with open(os.path.join(staged, "BUILD-ID"), "w") as f:
                    f.write(digest + "\n")
                verify(staged)
                os.rename(staged, bundle)  # appears complete or not at all
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            log(f"built {bundle}")
        else:
            os.utime(bundle)
            log(f"up to date: {bundle}")
        if mode == "onedir":
            tmp = os.path.join(DIST, f".current-{os.getpid()}")
            os.symlink(os.path.basename(bundle), tmp)
            os.replace(tmp, os.path.join(DIST, "current"))
        prune(mode, keep, bundle)
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onefile", action="store_true", help="build the onefile variant (for comparison)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the sources did not change")
    parser.add_argument("--keep", type=int, default=3, help="bundles of this mode to keep in the cache")
    args = parser.parse_args()
    print(build("onefile" if args.onefile else "onedir", args.force, max(1, args.keep)))


if __name__ == "__main__":
    main()
