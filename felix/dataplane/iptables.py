"""iptables programming: our ``cali-`` chains and the jumps into the kernel's
built-in chains, written with ``iptables-restore --noflush`` /
``ip6tables-restore --noflush`` in one batch per IP version.

Back end: ``legacy`` or ``nft`` (``iptablesBackend`` Legacy | NFT | Auto);
Auto picks the variant kube-proxy uses (its ``KUBE-IPTABLES-HINT`` /
``KUBE-KUBELET-CANARY`` chains), else the one holding more rules, else the
system's default ``iptables``.

Each rule carries ``-m comment --comment "cali:<hash of chain, index, text>"``,
so the state read back with ``iptables-save`` is compared by hash (the save
format differs from what was written). A batch declares (``:chain - [0:0]``
creates or flushes) only the chains that changed, then their rules, then
fixes the built-in jumps, then deletes chains that are gone. Chains of ours
found in the kernel and not wanted (a previous run, another back end) are
removed; everything else in the tables (kube-proxy's ``KUBE-*`` chains,
docker's) is never touched.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from felix.dataplane.iptables_render import rule_hash, with_comment

log = logging.getLogger(__name__)

PREFIX = "cali-"
TABLES = ("filter", "nat")
ALL_TABLES = ("raw", "mangle", "filter", "nat")
BUILTINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
            "raw": ("PREROUTING", "OUTPUT"), "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")}
UNKNOWN: Any = object()
_HASH_RE = re.compile(r'--comment "?cali:([A-Za-z0-9_-]{16})"?')
_KUBE_HINTS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")


class IptablesError(RuntimeError):
    def __init__(self, message: str, script: str = "") -> None:
        super().__init__(message)
        self.script = script


def _cmd(variant: str, version: int, what: str) -> str:
    base = "iptables" if version == 4 else "ip6tables"
    name = f"{base}-{variant}-{what}"
    return shutil.which(name) or f"/usr/sbin/{name}"


def save_text(variant: str, version: int, table: Optional[str] = None) -> str:
    args = [_cmd(variant, version, "save")] + (["-t", table] if table else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            return ""
        raise IptablesError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def count_rules(variant: str, version: int = 4) -> tuple[int, bool]:
    """(rule count, kube-proxy hint chain present) in one variant."""
    try:
        text = save_text(variant, version)
    except (IptablesError, OSError):
        return 0, False
    rules = sum(1 for line in text.splitlines() if line.startswith("-A "))
    hint = any(f":{h} " in text for h in _KUBE_HINTS)
    return rules, hint


def system_default_variant() -> str:
    try:
        out = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "legacy"
    return "nft" if "nf_tables" in out else "legacy"


def detect_backend(setting: str) -> str:
    """``iptablesBackend`` (Legacy | NFT | Auto) -> "legacy" | "nft"."""
    s = setting.strip().lower()
    if s in ("legacy", "nft"):
        return s
    legacy, legacy_hint = count_rules("legacy")
    nft, nft_hint = count_rules("nft")
    if legacy_hint != nft_hint:
        return "legacy" if legacy_hint else "nft"
    if legacy != nft:
        return "legacy" if legacy > nft else "nft"
    return system_default_variant()


@dataclass
class SavedTable:
    chains: dict[str, list[str]] = field(default_factory=dict)  # chain -> "-A ..." lines


def parse_save(text: str) -> dict[str, SavedTable]:
    tables: dict[str, SavedTable] = {}
    cur: Optional[SavedTable] = None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = tables.setdefault(line[1:].strip(), SavedTable())
        elif cur is None:
            continue
        elif line.startswith(":"):
            cur.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain = line.split()[1]
            cur.chains.setdefault(chain, []).append(line)
    return tables


def _is_ours(line: str) -> bool:
    return bool(_HASH_RE.search(line)) or f" -j {PREFIX}" in line or f" -g {PREFIX}" in line


@dataclass(frozen=True)
class Hook:
    """A jump from a built-in chain into one of ours."""

    table: str
    builtin: str
    target: str

    def rule(self, index: int) -> str:
        return with_comment(self.builtin, index, f"-j {self.target}")


class IptablesTables:
    """Desired vs programmed chains of one IP version (filter and nat)."""

    def __init__(self, variant: str, version: int, insert_mode: str = "INSERT",
                 lock_timeout: float = 10.0) -> None:
        self.variant = variant
        self.version = version
        self.insert_mode = insert_mode.upper()
        self.lock_timeout = lock_timeout
        self.chains: dict[tuple[str, str], tuple[str, ...]] = {}
        self.hooks: list[Hook] = []
        self._p_chains: dict[tuple[str, str], Any] = {}  # -> tuple of hashes | UNKNOWN
        self._dirty: set[tuple[str, str]] = set()
        self._hooks_dirty = True
        self.resync_needed = True
        self.last_script = ""
        self.restores = 0

    # -- writers ----------------------------------------------------------------

    def set_chain(self, table: str, name: str, rules: Iterable[str]) -> None:
        key = (table, name)
        rules = tuple(rules)
        if self.chains.get(key) == rules:
            return
        self.chains[key] = rules
        self._dirty.add(key)

    def remove_chain(self, table: str, name: str) -> None:
        key = (table, name)
        if key in self.chains:
            del self.chains[key]
            self._dirty.add(key)

    def set_hooks(self, hooks: list[Hook]) -> None:
        if hooks != self.hooks:
            self.hooks = list(hooks)
            self._hooks_dirty = True

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._hooks_dirty or self.resync_needed)

    # -- kernel access --------------------------------------------------------------

    def restore(self, script: str) -> None:
        args = [_cmd(self.variant, self.version, "restore"), "--noflush", "--wait", str(int(max(1, self.lock_timeout)))]
        self.last_script = script
        self.restores += 1
        try:
            proc = subprocess.run(args, input=script, capture_output=True, text=True,
                                  timeout=self.lock_timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise IptablesError(f"{args[0]} timed out", script) from exc
        if proc.returncode != 0:
            raise IptablesError(f"{args[0]} failed: {proc.stderr.strip()}", script)

    def read(self) -> dict[str, SavedTable]:
        return parse_save(save_text(self.variant, self.version))

    # -- apply ---------------------------------------------------------------------------

    def _hashes(self, key: tuple[str, str]) -> tuple[str, ...]:
        return tuple(rule_hash(key[1], i, r) for i, r in enumerate(self.chains[key]))

    def _learn(self, saved: dict[str, SavedTable]) -> None:
        """Take the kernel's cali- chains as the programmed state."""
        self._p_chains = {}
        for table in TABLES:
            for chain, lines in saved.get(table, SavedTable()).chains.items():
                if not chain.startswith(PREFIX):
                    continue
                key = (table, chain)
                hashes = []
                for line in lines:
                    m = _HASH_RE.search(line)
                    hashes.append(m.group(1) if m else "?")
                self._p_chains[key] = tuple(hashes)
                if key not in self.chains or self._p_chains[key] != self._hashes(key):
                    self._dirty.add(key)
        for key in self.chains:
            if key not in self._p_chains:
                self._dirty.add(key)
        self._hooks_dirty = True
        self.resync_needed = False

    def _hook_fix(self, saved: dict[str, SavedTable]) -> dict[str, list[str]]:
        """restore lines per table that put our jumps where they belong."""
        out: dict[str, list[str]] = {}
        wanted: dict[tuple[str, str], list[Hook]] = {}
        for h in self.hooks:
            wanted.setdefault((h.table, h.builtin), []).append(h)
        for table in TABLES:
            for builtin in BUILTINS[table]:
                lines = saved.get(table, SavedTable()).chains.get(builtin, [])
                ours = [(i, line) for i, line in enumerate(lines) if _is_ours(line)]
                want = wanted.get((table, builtin), [])
                want_rules = [h.rule(i) for i, h in enumerate(want)]
                have_hashes = [m.group(1) if (m := _HASH_RE.search(line)) else "?" for _, line in ours]
                want_hashes = [rule_hash(builtin, i, f"-j {h.target}") for i, h in enumerate(want)]
                in_place = have_hashes == want_hashes
                if in_place and want and self.insert_mode == "INSERT":
                    in_place = [i for i, _ in ours] == list(range(len(want)))
                if in_place:
                    continue
                cmds = out.setdefault(table, [])
                for _, line in ours:
                    cmds.append("-D" + line[2:])
                if self.insert_mode == "INSERT":
                    cmds.extend(f"-I {builtin} {i + 1} {r}" for i, r in enumerate(want_rules))
                else:
                    cmds.extend(f"-A {builtin} {r}" for r in want_rules)
        return out

    def apply(self) -> bool:
        if not self.dirty:
            return False
        saved: Optional[dict[str, SavedTable]] = None
        if self.resync_needed:
            saved = self.read()
            self._learn(saved)
        hook_cmds: dict[str, list[str]] = {}
        if self._hooks_dirty:
            if saved is None:
                saved = self.read()
            hook_cmds = self._hook_fix(saved)
        dirty = set(self._dirty)
        script: list[str] = []
        for table in TABLES:
            write = sorted(k[1] for k in dirty if k[0] == table and k in self.chains
                           and self._p_chains.get(k) != self._hashes(k))
            gone = sorted(k[1] for k in dirty if k[0] == table and k not in self.chains and k in self._p_chains)
            cmds = hook_cmds.get(table, [])
            if not (write or gone or cmds):
                continue
            script.append(f"*{table}")
            script.extend(f":{c} - [0:0]" for c in write + gone)
            # Hook deletions first (they may refer to chains that go), insertions
            # after the chains they jump to exist (same transaction anyway).
            script.extend(c for c in cmds if c.startswith("-D"))
            for c in write:
                script.extend(f"-A {c} {with_comment(c, i, r)}" for i, r in enumerate(self.chains[(table, c)]))
            script.extend(c for c in cmds if not c.startswith("-D"))
            script.extend(f"-X {c}" for c in gone)
            script.append("COMMIT")
        if script:
            try:
                self.restore("\n".join(script) + "\n")
            except IptablesError:
                self.resync_needed = True
                raise
        for key in dirty:
            if key in self.chains:
                self._p_chains[key] = self._hashes(key)
            else:
                self._p_chains.pop(key, None)
        self._dirty -= dirty
        self._hooks_dirty = False
        return bool(script)

    def verify(self) -> list[str]:
        """Compare the kernel with what we programmed; mark drift for repair."""
        if self.resync_needed:
            return []
        saved = self.read()
        problems: list[str] = []
        for table in TABLES:
            k_chains = saved.get(table, SavedTable()).chains
            for chain in k_chains:
                key = (table, chain)
                if chain.startswith(PREFIX) and key not in self._p_chains:
                    problems.append(f"unexpected chain {table}/{chain}")
                    self._p_chains[key] = UNKNOWN
                    self._dirty.add(key)
            for key in [k for k in self._p_chains if k[0] == table]:
                if key[1] not in k_chains:
                    problems.append(f"chain {table}/{key[1]} is missing")
                    del self._p_chains[key]
                    self._dirty.add(key)
                    continue
                hashes = tuple(m.group(1) if (m := _HASH_RE.search(line)) else "?" for line in k_chains[key[1]])
                if hashes != self._p_chains[key]:
                    problems.append(f"chain {table}/{key[1]} has been modified")
                    self._p_chains[key] = UNKNOWN
                    self._dirty.add(key)
        if self._hook_fix(saved):
            problems.append("jumps from the built-in chains are missing or misplaced")
            self._hooks_dirty = True
        return problems


def cleanup_variant(variant: str, version: int, lock_timeout: float = 10.0) -> list[str]:
    """Remove every cali- chain and our jumps from one iptables variant (all
    tables); built-in chains are never flushed. Returns what was removed."""
    try:
        saved = parse_save(save_text(variant, version))
    except (IptablesError, OSError):
        return []
    script: list[str] = []
    removed: list[str] = []
    for table in ALL_TABLES:
        st = saved.get(table)
        if st is None:
            continue
        ours = [c for c in st.chains if c.startswith(PREFIX)]
        deletes = [("-D" + line[2:]) for chain, lines in st.chains.items() if not chain.startswith(PREFIX)
                   for line in lines if _is_ours(line)]
        if not ours and not deletes:
            continue
        script.append(f"*{table}")
        script.extend(f":{c} - [0:0]" for c in ours)
        script.extend(deletes)
        script.extend(f"-X {c}" for c in ours)
        script.append("COMMIT")
        removed += [f"{table}/{c}" for c in ours] + [f"{table}: {d}" for d in deletes]
    if script:
        args = [_cmd(variant, version, "restore"), "--noflush", "--wait", str(int(max(1, lock_timeout)))]
        proc = subprocess.run(args, input="\n".join(script) + "\n", capture_output=True, text=True)
        if proc.returncode != 0:
            raise IptablesError(f"{args[0]} failed: {proc.stderr.strip()}", "\n".join(script))
    return removed


def cleanup_all(variants: Iterable[str] = ("legacy", "nft"), lock_timeout: float = 10.0) -> list[str]:
    removed: list[str] = []
    for variant in variants:
        for version in (4, 6):
            removed += [f"{variant}/v{version} {r}" for r in cleanup_variant(variant, version, lock_timeout)]
    return removed
