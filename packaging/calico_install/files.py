"""Atomic, idempotent file operations for the installer.

Every write goes to a temporary name in the destination directory and is
renamed into place, so a reader (kubelet, containerd, a plugin being exec'd)
sees the old file or the new one, never a partial one. Writes whose result
would be identical to what is already there are skipped, so a rerun changes
nothing (same inode, same mtime).
"""
from __future__ import annotations

import filecmp
import os
import shutil
import tempfile

from calico_install.errors import InstallError


def ensure_writable_dir(path: str, what: str, hint: str) -> None:
    """Create ``path`` if missing and prove it writable by creating a file in it.

    ``os.access`` is not enough: root passes it on read-only mounts' parents
    and on immutable directories; an actual write is the only honest test.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"cannot create the {what} {path}: {exc.strerror}. {hint}") from None
    if not os.path.isdir(path):
        raise InstallError(f"the {what} {path} is not a directory. {hint}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".calico-install-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InstallError(f"the {what} {path} is not writable ({exc.strerror}). {hint}") from None


def _tmp_name(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def write_file(path: str, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` with permissions ``mode``; return whether anything changed."""
    try:
        st = os.stat(path)
        if (st.st_mode & 0o7777) == mode and st.st_size == len(data):
            with open(path, "rb") as f:
                if f.read() == data:
                    return False
    except FileNotFoundError:
        pass
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow it
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return True


def copy_file(src: str, dst: str, mode: int | None = None) -> bool:
    """Copy ``src`` to ``dst`` (mode of ``src`` unless given); return whether anything changed."""
    want = mode if mode is not None else (os.stat(src).st_mode & 0o7777)
    try:
        st = os.stat(dst)
        if (
            not os.path.islink(dst)
            and (st.st_mode & 0o7777) == want
            and filecmp.cmp(src, dst, shallow=False)
        ):
            return False
    except FileNotFoundError:
        pass
    tmp = _tmp_name(dst)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, want)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return True


def symlink(target: str, link: str) -> bool:
    """Point ``link`` at ``target`` (replacing whatever is there); return whether anything changed."""
    if os.path.islink(link) and os.readlink(link) == target:
        return False
    tmp = _tmp_name(link)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return True


def remove(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
