"""Typha wire protocol: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length followed by a UTF-8 JSON object with
a ``type`` field. Message types (upstream's names in brackets):

client -> server: ``hello`` {node, version, syncerType, info} [MsgClientHello],
                  ``ping`` {ts} [MsgPing], ``pong`` {ts} [MsgPong]
server -> client: ``serverHello`` {version, syncerType, connId} [MsgServerHello],
                  ``kvs`` {kvs: [{k, v, r}]} [MsgKVs; v null = deletion],
                  ``status`` {status} [MsgSyncStatus], ``ping`` / ``pong``.

A connection gets the snapshot as ``kvs`` chunks, then ``status`` (in-sync once
the cache is), then deltas in datastore order; every KV carries its revision.
"""
from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

PROTOCOL_VERSION = "pycalico-typha/1"
HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
SNAPSHOT_CHUNK = 500  # KVs per snapshot frame

SYNCER_FELIX = "felix"
SYNCER_BGP = "bgp"  # confd


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("frame is not an object with a type")
    _check_fields(msg)
    return msg


_STATUSES = ("wait-for-ready", "resync", "in-sync")  # datastore.syncer.SyncStatus values


def _check_fields(msg: dict[str, Any]) -> None:
    """The fields a receiver indexes must be there with the right types."""
    kind = msg["type"]
    if kind == "kvs":
        kvs = msg.get("kvs")
        if not isinstance(kvs, list) or not all(
            isinstance(kv, dict) and isinstance(kv.get("k"), str) and isinstance(kv.get("r"), str) and "v" in kv
            for kv in kvs
        ):
            raise ProtocolError("kvs frame needs a list of {k: str, v, r: str}")
    elif kind == "status" and msg.get("status") not in _STATUSES:
        raise ProtocolError(f"unknown sync status {msg.get('status')!r}")


def check_length(length: int, max_frame: int) -> None:
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_frame}-byte limit")


async def read_frame(reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME) -> dict[str, Any]:
    """Read one frame; raises ProtocolError on bad input, IncompleteReadError on EOF."""
    header = await reader.readexactly(HEADER.size)
    (length,) = HEADER.unpack(header)
    check_length(length, max_frame)
    return decode_body(await reader.readexactly(length))


class FrameBuffer:
    """Incremental decoder for blocking-socket clients."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            check_length(length, self._max)
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(decode_body(bytes(self._buf[HEADER.size:end])))
            del self._buf[:end]
        return out
