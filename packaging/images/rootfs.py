"""Stage a root filesystem from files of this machine, for a ``FROM scratch`` image.

Every host path is copied to the same path under the staging directory, with
the symlinks met on the way (``/lib64 -> usr/lib64``, ``libfoo.so.1 ->
libfoo.so.1.2.3``) recreated as symlinks, so the image has the host's layout.
Executables bring the shared libraries ``ldd`` resolves for them (and the
dynamic loader).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterable


class RootFS:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.host_files: set[str] = set()  # real host files copied (for the cache check)

    def _dest(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # -- plain content -----------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        dest = self._dest(path)
        os.makedirs(dest, exist_ok=True)
        os.chmod(dest, mode)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        dest = self._dest(path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(dest, mode)

    def symlink(self, path: str, target: str) -> None:
        dest = self._dest(path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            if os.path.islink(dest) and os.readlink(dest) == target:
                return
            raise FileExistsError(f"{path} already exists in {self.root}")
        os.symlink(target, dest)

    def copy(self, src: str, path: str, mode: int | None = None) -> None:
        """One file of the repository (or anywhere) to ``path``."""
        dest = self._dest(path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(src, dest)
        if mode is not None:
            os.chmod(dest, mode)

    def copy_tree(self, src: str, path: str) -> None:
        """A directory, symlinks kept as symlinks (the frozen bundle)."""
        shutil.copytree(src, self._dest(path), symlinks=True, dirs_exist_ok=True)

    # -- host files with their layout --------------------------------------------

    def add_host_path(self, path: str) -> None:
        """``path`` from this machine at the same place, symlinks on the way included."""
        parts = [p for p in os.path.normpath(path).split("/") if p]
        current = "/"
        for i, part in enumerate(parts):
            nxt = os.path.join(current, part)
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                self.symlink(nxt, target)
                resolved = os.path.normpath(os.path.join(current, target))
                rest = parts[i + 1:]
                self.add_host_path(os.path.join(resolved, *rest) if rest else resolved)
                return
            current = nxt
            if i < len(parts) - 1:
                dest = self._dest(current)
                if not os.path.isdir(dest):
                    os.makedirs(dest)
                    os.chmod(dest, os.stat(current).st_mode & 0o7777)
        if os.path.isdir(current):
            self.mkdir(current, os.stat(current).st_mode & 0o7777)
        elif not os.path.exists(self._dest(current)):
            shutil.copy2(current, self._dest(current))
            self.host_files.add(current)

    def add_executables(self, paths: Iterable[str], library_path: str | None = None,
                        skip_under: str | None = None) -> None:
        """Host executables (or any ELF files) and their shared libraries.
        ``library_path``/``skip_under``: resolve (and leave out) libraries of
        a bundle that already carries them."""
        paths = list(paths)
        for lib in shared_libraries(paths, library_path):
            if skip_under is None or not lib.startswith(skip_under.rstrip("/") + "/"):
                self.add_host_path(lib)
        for path in paths:
            if skip_under is None or not path.startswith(skip_under.rstrip("/") + "/"):
                self.add_host_path(path)


def shared_libraries(paths: list[str], library_path: str | None = None) -> list[str]:
    """Everything ``ldd`` resolves for ``paths`` (the loader included);
    raises if a library is missing."""
    if not paths:
        return []
    env = dict(os.environ, LC_ALL="C")
    env.pop("LD_LIBRARY_PATH", None)
    if library_path:
        env["LD_LIBRARY_PATH"] = library_path
    found: set[str] = set()
    for start in range(0, len(paths), 200):
        proc = subprocess.run(["ldd", *paths[start:start + 200]], capture_output=True, text=True, env=env)
        for line in proc.stdout.splitlines():
            line = line.strip()
            if "not found" in line:
                raise RuntimeError(f"ldd: {line} (among {paths[start:start + 200]})")
            if "=>" in line:
                target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
                if target.startswith("/"):
                    found.add(target)
            elif line.startswith("/") and " (0x" in line:
                found.add(line.split(" (")[0])  # the loader
    return sorted(found)


def elf_files(directory: str) -> list[str]:
    """Regular ELF files under ``directory`` (not following symlinks)."""
    out = []
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(path)
    return sorted(out)
