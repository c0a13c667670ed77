"""Running nft commands: libnftables through ctypes, or the ``nft`` binary.

libnftables runs a script as one kernel transaction in ~0.2 ms; exec'ing
``nft -f -`` costs ~15 ms per call, which would dominate a policy change.
The binary is the fallback when the library cannot be loaded.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import shutil
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)

NFT_CTX_OUTPUT_JSON = 1 << 4


class NftError(RuntimeError):
    def __init__(self, message: str, script: str = "") -> None:
        super().__init__(message)
        self.script = script


class _LibNft:
    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(name)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        self._json_ctx = lib.nft_ctx_new(0)
        for ctx in (self._ctx, self._json_ctx):
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_output_set_flags(self._json_ctx, NFT_CTX_OUTPUT_JSON)

    def run(self, script: str, json_output: bool = False) -> str:
        ctx = self._json_ctx if json_output else self._ctx
        rc = self._lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = (self._lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (self._lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(err.strip() or f"nft failed with {rc}", script)
        return out


class _NftBinary:
    def __init__(self) -> None:
        self._nft = shutil.which("nft") or "/usr/sbin/nft"

    def run(self, script: str, json_output: bool = False) -> str:
        args = [self._nft] + (["-j"] if json_output else []) + ["-f", "-"]
        proc = subprocess.run(args, input=script.encode(), capture_output=True)
        if proc.returncode != 0:
            raise NftError(proc.stderr.decode(errors="replace").strip(), script)
        return proc.stdout.decode(errors="replace")


class Nft:
    """Thread-safe nft runner."""

    def __init__(self, use_library: bool = True) -> None:
        self._lock = threading.Lock()
        self._impl: Any
        if use_library:
            try:
                self._impl = _LibNft()
                self.backend = "libnftables"
                return
            except (OSError, AttributeError) as exc:
                log.warning("libnftables unavailable (%s): using the nft binary", exc)
        self._impl = _NftBinary()
        self.backend = "nft"

    def run(self, script: str) -> str:
        with self._lock:
            return self._impl.run(script)

    def list_json(self, what: str) -> dict[str, Any] | None:
        """``nft -j list <what>``; None if the object does not exist."""
        with self._lock:
            try:
                out = self._impl.run(f"list {what}", json_output=True)
            except NftError as exc:
                if "No such file or directory" in str(exc):
                    return None
                raise
        return json.loads(out) if out.strip() else None
