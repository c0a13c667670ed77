"""Fuzz targets: every parser of outside input, with the errors it may raise.

Each target takes raw bytes and returns normally or raises one of its
*documented* error types (caught here); anything else escapes and is a crash.
Some targets also check properties of what they parsed (a selector's canonical
form re-parses to itself; a resource that loads also loads again from its own
dump), which turn silent corruption into crashes too.

The same functions are driven by atheris (``tests/fuzz/run.py``) and replayed
over the checked-in corpora by ``tests/fuzz/test_fuzz.py``.
"""
from __future__ import annotations

import inspect
import json
import socket
from typing import Any, Callable

Target = Callable[[bytes], None]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape").replace("\udc00", "")


# -- CNI: environment + network config --------------------------------------------------


def split_env(data: bytes) -> tuple[dict[str, str], bytes]:
    """Corpus format: ``KEY=VALUE`` lines, a blank line, then stdin."""
    head, sep, stdin = data.partition(b"\n\n")
    if not sep:
        return {}, data
    env: dict[str, str] = {}
    for line in head.split(b"\n"):
        key, _, value = line.partition(b"=")
        k = key.decode("latin-1")
        if k and "\0" not in k:
            # As os.environ decodes: undecodable bytes become lone surrogates.
            env[k] = value.decode("utf-8", "surrogateescape").replace("\0", "")
    return env, stdin


def cni_netconf(data: bytes) -> None:
    """``cni.skel.read_args`` (env + stdin) -> ``parse_netconf`` -> CNI_ARGS -> workload
    names; documented error: ``CNIError`` (the spec's error JSON)."""
    from cni.errors import CNIError
    from cni.names import Workload
    from cni.netconf import parse_netconf
    from cni.skel import error_version, read_args, version_result

    env, stdin = split_env(data)
    json.dumps(version_result(stdin))
    assert isinstance(error_version(stdin), str)
    try:
        args = read_args(env, stdin)
        if args.command == "VERSION":
            return
        conf = parse_netconf(args.conf)
        if conf.ipam is not None:
            conf.ipam.wants_ipv4(), conf.ipam.wants_ipv6()
        if conf.dns is not None:
            json.dumps(conf.dns.to_result())
        for value in vars(conf).values():  # strings go into etcd keys / JSON / logs as UTF-8
            if isinstance(value, str):
                value.encode()
        w = Workload.from_args(conf.nodename or "node", args.container_id or "c", args.ifname or "eth0",
                               args.cni_args)
        w.endpoint_name.encode(), w.host_ifname, w.workload_id.encode()
    except CNIError as err:
        json.dumps(err.to_json("1.1.0"))


def cni_args(data: bytes) -> None:
    """``parse_cni_args`` on its own (CNI_ARGS ``K=V;K=V``); documented error: ``CNIError``."""
    from cni.errors import CNIError
    from cni.skel import parse_cni_args

    try:
        parsed = parse_cni_args(_text(data))
    except CNIError:
        return
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in parsed.items())


# -- selectors --------------------------------------------------------------------------

_LABELS = [{}, {"a": "b"}, {"app": "web", "projectcalico.org/namespace": "ns1"}, {"k": "", "x": "\"'\\"}]


def selector(data: bytes) -> None:
    """``parse_selector``; documented error: ``SelectorError``. Properties: the
    canonical form parses to the same selector, evaluation never raises, and
    the namespace rewrite of a valid selector is valid."""
    from datastore.selector import SelectorError, namespace_selector_to_endpoint_selector, parse_selector

    text = _text(data)
    try:
        sel = parse_selector(text)
    except SelectorError as err:
        assert isinstance(err, ValueError)
        return
    again = parse_selector(sel.canonical)
    assert again.canonical == sel.canonical, (text, sel.canonical, again.canonical)
    for labels in _LABELS:
        assert sel.evaluate(labels) == again.evaluate(labels)
    sel.unique_id()
    namespace_selector_to_endpoint_selector(text).canonical
    sel.with_label_prefix("pcns.").canonical


# -- resources: calicoctl's loader and the datastore models -----------------------------


def resources(data: bytes) -> None:
    """``load_yaml_documents`` -> calicoctl's ``validate_document`` -> model; documented
    errors: ``ResourceError`` (and calicoctl's namespace ``ValueError``s, which
    ``load_files`` reports as such). Property: a loaded resource loads again from
    its own dump to the same dump."""
    from calicoctl.resources import NamespaceArgs, validate_document
    from datastore.models import ResourceError, dump_resource, load_resource, load_yaml_documents

    try:  # calicoctl reads files strictly (else FileInvalid), stdin as Python does (surrogateescape)
        docs = load_yaml_documents(data.decode("utf-8", "surrogateescape"))
    except ResourceError:
        return
    for doc in docs[:20]:
        for ns in (NamespaceArgs(), NamespaceArgs(namespace="other")):
            try:
                validate_document(doc, ns)
            except (ResourceError, ValueError):
                pass
        try:
            model = load_resource(doc)
        except ResourceError:
            continue
        dumped = dump_resource(model)
        json.dumps(dumped)
        again = dump_resource(load_resource(dumped))
        assert again == dumped, (dumped, again)


def datastore_keys(data: bytes) -> None:
    """``key_from_path`` on etcd / Typha key paths: a key or ``None``, never an exception
    (Typha clients call it on paths a peer sent)."""
    from datastore.keys import key_from_path

    key = key_from_path(_text(data))
    if key is not None:
        assert key_from_path(key.path) == key, (key, key.path)


# -- Typha wire protocol ----------------------------------------------------------------


def typha_frames(data: bytes) -> None:
    """``FrameBuffer.feed`` / ``decode_body`` on a byte stream; documented error: ``ProtocolError``."""
    from typha import proto

    buf = proto.FrameBuffer(max_frame=64 * 1024)
    try:
        for i in range(0, len(data), 7):  # fed in small chunks, as a socket would
            for msg in buf.feed(data[i:i + 7]):
                assert isinstance(msg, dict) and isinstance(msg["type"], str)
    except proto.ProtocolError:
        pass
    try:
        proto.decode_body(data)
    except proto.ProtocolError:
        pass


_HELLO: bytes | None = None


def typha_client(data: bytes) -> None:
    """Felix's Typha client (``TyphaSyncer._session``) reading ``data`` as the server's
    stream after a valid ``serverHello``; documented errors: those its reconnect loop
    handles (``ProtocolError``, ``ConnectionError``, ``OSError``). Anything else would
    kill the client thread and leave Felix without updates."""
    from typha import proto
    from typha.client import TyphaSyncer

    global _HELLO
    if _HELLO is None:
        _HELLO = proto.encode({"type": "serverHello", "version": proto.PROTOCOL_VERSION,
                               "syncerType": "felix", "connId": 1})
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(_HELLO + data[:64 * 1024])
        theirs.shutdown(socket.SHUT_WR)
        updates: list[Any] = []
        syncer = TyphaSyncer("127.0.0.1:1", "fuzz-node", updates.extend, lambda s: None,
                             ping_interval=3600, read_timeout=3600, max_frame_size=64 * 1024)
        syncer._connect = lambda: ours  # type: ignore[method-assign]
        args: tuple[Any, ...] = ()
        if inspect.signature(syncer._session).parameters:  # newer clients take the Typha address
            from typha.discovery import TyphaAddr

            args = (TyphaAddr("127.0.0.1:1"),)
        try:
            syncer._session(*args)
        except (proto.ProtocolError, ConnectionError, OSError):
            pass
        for u in updates:
            assert u.key is not None
    finally:
        ours.close()
        theirs.close()


TARGETS: dict[str, Target] = {
    "cni_netconf": cni_netconf,
    "cni_args": cni_args,
    "selector": selector,
    "resources": resources,
    "datastore_keys": datastore_keys,
    "typha_frames": typha_frames,
    "typha_client": typha_client,
}

# Modules atheris instruments for coverage feedback (imported under its hook).
INSTRUMENTED = [
    "cni.errors", "cni.skel", "cni.netconf", "cni.names",
    "datastore.selector", "datastore.keys", "datastore.kinds", "datastore.models",
    "datastore.models.common", "datastore.models.ippool", "datastore.models.ipam", "datastore.models.node",
    "datastore.models.endpoint", "datastore.models.policy", "datastore.models.bgp", "datastore.models.felix",
    "datastore.models.cluster", "calicoctl.resources",
    "typha.proto", "typha.client",
]
