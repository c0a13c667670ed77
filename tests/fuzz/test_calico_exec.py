"""Exec the real ``calico`` and ``calico-ipam`` entry points with fuzzed stdin and environment.

Inputs are the ``cni_netconf`` seed corpus mutated here (a seeded mutator:
JSON-aware field replacement and raw byte edits; atheris' mutator only runs
inside its in-process loop, which cannot drive a process per input), a bounded
number of cases (``PYCALICO_FUZZ_EXECS``,
default 60, two thirds of that for calico-ipam; ``PYCALICO_FUZZ_EXEC_SEED``
picks the sequence). The rule checked is the
CNI spec's: stdout is exactly one JSON document -- a result on success (or
nothing, for a successful DEL/GC), the spec's error object (``code``, ``msg``)
on failure -- never a traceback; and no input reaches code 199 ("internal
error", an exception the plugin did not expect).

Safety: whatever the mutation, the plugin only gets a netns this test created
(or a missing path), a CNI_PATH holding only calico/calico-ipam, file paths
rewritten into the test's tmp dir, and the test's private etcd; every
successful ADD is DELeted and the netns removed at the end.
"""
from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import uuid
from typing import Any

import pytest

from tests.fuzz.targets import split_env
from tests.support.cni_exec import VENV_BIN
from tests.support.netns import Netns
from tests.support.pools import create_pool

HERE = os.path.dirname(os.path.abspath(__file__))
EXECS = int(os.environ.get("PYCALICO_FUZZ_EXECS", "60"))
SEED = int(os.environ.get("PYCALICO_FUZZ_EXEC_SEED", "13"))
_PATH_FIELDS = ("log_file_path", "ipam_lock_file", "nodename_file", "etcd_key_file", "etcd_cert_file",
                "etcd_ca_cert_file")


_ODD_VALUES: list[Any] = [None, True, False, 0, -1, 70000, 1.5, "", "x" * 300, "\u00e9\udc9b", [], {}, ["a", 1],
                          {"type": 1}, "0.3.1", "1.1.0", "9.9.9", "true", "10.213.0.5", "10.213.0.0/16", "::1"]
_ODD_ENV = ["", "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "add", "a;b", "=x", "K=V;K8S_POD_NAME=p",
            "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p\udcff", "x" * 40, "eth0", "../x", "\u00e9"]


def _mutate_json(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """Replace, drop or add one field somewhere in a JSON value."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.3:
            out[rng.choice(["cniVersion", "name", "type", "ipam", "mtu", "dns", "kubernetes", "args",
                            "runtimeConfig", "prevResult", "nodename", "policy", "x"])] = rng.choice(_ODD_VALUES)
        else:
            out[key] = _mutate_json(rng, value[key], depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mutate_json(rng, out_list[i], depth + 1)
        return out_list
    return rng.choice(_ODD_VALUES)


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            break
        i = rng.randrange(len(buf))
        roll = rng.random()
        if roll < 0.4:
            buf[i] = rng.randrange(256)
        elif roll < 0.7:
            del buf[i:i + rng.randint(1, 16)]
        else:
            buf[i:i] = rng.choice([b"{", b"}", b"\"", b"\\u0000", b"\xff", b"null", b"[", b",", b"\n\n"])
    return bytes(buf)


def _mutate(rng: random.Random, seeds: list[bytes]) -> tuple[dict[str, str], bytes]:
    """A seed (env lines + stdin) with its env and/or JSON fields or raw bytes mutated."""
    env, stdin = split_env(rng.choice(seeds))
    for _ in range(rng.randint(0, 2)):
        key = rng.choice(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_ARGS", "CNI_NETNS", "CNI_PATH"])
        if rng.random() < 0.2:
            env.pop(key, None)
        else:
            env[key] = rng.choice(_ODD_ENV) if key != "CNI_COMMAND" or rng.random() < 0.3 else \
                rng.choice(["ADD", "DEL", "CHECK", "GC", "STATUS"])
    roll = rng.random()
    if roll < 0.6:
        try:
            conf = json.loads(stdin)
            for _ in range(rng.randint(1, 3)):
                conf = _mutate_json(rng, conf)
            stdin = json.dumps(conf).encode()
        except ValueError:
            stdin = _mutate_bytes(rng, stdin)
    elif roll < 0.9:
        stdin = _mutate_bytes(rng, stdin)
    return env, stdin


def _sanitise(stdin: bytes, tmp: str, endpoint: str, rng: random.Random) -> bytes:
    """Keep the fuzzed config from touching anything outside the test."""
    try:
        conf = json.loads(stdin)
    except (ValueError, UnicodeDecodeError):
        return stdin
    if not isinstance(conf, dict):
        return stdin
    for field in _PATH_FIELDS:
        if isinstance(conf.get(field), str) and conf[field]:
            conf[field] = os.path.join(tmp, "f-" + uuid.uuid4().hex[:6])
    conf.setdefault("log_file_path", os.path.join(tmp, "cni.log"))
    conf.setdefault("ipam_lock_file", os.path.join(tmp, "ipam.lock"))
    if isinstance(conf.get("kubernetes"), dict) and isinstance(conf["kubernetes"].get("kubeconfig"), str):
        conf["kubernetes"]["kubeconfig"] = os.path.join(tmp, "no-kubeconfig")
    if isinstance(conf.get("etcd_endpoints"), str) or rng.random() < 0.5:
        conf["etcd_endpoints"] = endpoint if rng.random() < 0.8 else "http://127.0.0.1:1"
    if isinstance(conf.get("ipam"), dict) and isinstance(conf["ipam"].get("type"), str):
        conf["ipam"]["type"] = "calico-ipam"  # never another IPAM plugin with a fuzzed config
    return json.dumps(conf).encode()


def _check_output(command: str, rc: int, stdout: str, case: str) -> dict[str, Any] | None:
    assert "Traceback" not in stdout, case
    if not stdout.strip():
        assert rc == 0 and command in ("DEL", "GC"), f"empty stdout with exit {rc} for {command!r}: {case}"
        return None
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise AssertionError(f"stdout is not one JSON document: {stdout[:500]!r}: {case}") from None
    assert isinstance(doc, dict), case
    if rc != 0:
        assert isinstance(doc.get("code"), int) and isinstance(doc.get("msg"), str), f"{doc}: {case}"
        assert doc["code"] != 199, f"internal error (unexpected exception): {doc}: {case}"
        return None
    assert isinstance(doc.get("cniVersion"), str), f"{doc}: {case}"
    return doc


@pytest.mark.etcd
@pytest.mark.netns
@pytest.mark.parametrize("plugin", ["calico", "calico-ipam"])
def test_exec_fuzzed_input(plugin: str, private_etcd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datastore.etcd import EtcdBackend

    backend = EtcdBackend(private_etcd.endpoint)
    create_pool(backend, "fuzz-pool", "10.213.0.0/16")
    backend.close()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("calico", "calico-ipam"):
        os.symlink(os.path.join(VENV_BIN, name), bindir / name)
    seeds = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(HERE, "corpus", "cni_netconf", "*")))]
    rng = random.Random(SEED)
    added: list[dict[str, str]] = []
    stats = {"cases": 0, "results": 0, "errors": 0, "empty": 0}
    codes: dict[int, int] = {}
    with Netns("pcfz") as ns:
        try:
            cases = EXECS if plugin == "calico" else EXECS * 2 // 3
            for i in range(cases):
                env, stdin = _mutate(rng, seeds)
                stdin = _sanitise(stdin, str(tmp_path), private_etcd.endpoint, rng)
                env = {k: v for k, v in env.items() if k.startswith("CNI_") or k == "K8S_POD_NAME"}
                if env.get("CNI_NETNS"):
                    env["CNI_NETNS"] = ns.path if rng.random() < 0.8 else str(tmp_path / "missing-ns")
                if "CNI_PATH" in env:
                    env["CNI_PATH"] = str(bindir)
                if env.get("CNI_COMMAND") == "ADD" and env.get("CNI_CONTAINERID"):
                    env["CNI_CONTAINERID"] = f"{env['CNI_CONTAINERID'][:20]}{i}"  # distinct pods
                full_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                            "PYTHONDONTWRITEBYTECODE": "1",
                            "PYCALICO_CNI_SOCKET": "none", **env}
                case = f"case {i}: env={env!r} stdin={stdin[:300]!r}"
                proc = subprocess.run([str(bindir / plugin)], input=stdin, env=full_env,
                                      capture_output=True, timeout=120)
                stdout = proc.stdout.decode("utf-8", "replace")
                doc = _check_output(env.get("CNI_COMMAND", ""), proc.returncode, stdout, case)
                stats["cases"] += 1
                if proc.returncode != 0:
                    stats["errors"] += 1
                    code = json.loads(stdout)["code"]
                    codes[code] = codes.get(code, 0) + 1
                elif doc is None:
                    stats["empty"] += 1
                else:
                    stats["results"] += 1
                    if env.get("CNI_COMMAND") == "ADD":
                        added.append({"env": json.dumps(env), "stdin": stdin.decode("utf-8", "replace")})
        finally:
            for a in added:  # undo what succeeded, then the netns takes any veth with it
                env = json.loads(a["env"])
                env["CNI_COMMAND"] = "DEL"
                subprocess.run([str(bindir / plugin)], input=a["stdin"].encode(),
                               env={"PATH": os.environ.get("PATH", ""), "PYCALICO_CNI_SOCKET": "none", **env}, capture_output=True, timeout=120)
    print(f"{plugin} exec fuzz: {stats}, error codes {dict(sorted(codes.items()))}")
    assert stats["cases"] == cases
