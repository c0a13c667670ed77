"""Kernel IP sets (``ipset``) for the iptables data plane.

Names follow upstream Felix: ``cali40<id>`` / ``cali60<id>`` truncated to 31
characters (selector sets ``cali40s:<hash>``, named-port sets
``cali40p:<hash>`` of type ``hash:ip,port``, CIDR lists ``cali40n:<hash>``,
fixed ``cali40all-ipam-pools`` / ``cali40masq-ipam-pools``).

Desired state is whole sets (name -> type, members); ``apply`` writes ONE
``ipset restore`` batch: new sets are created and filled, changed sets get
``add``/``del`` deltas, sets whose kernel content is unknown (first run,
drift) are rebuilt in a temporary set and swapped in, so a set never goes
empty while rules use it. Removed sets are destroyed by ``apply_deletions``,
which the data plane calls after the rules that used them are gone.
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Any, Iterable, Optional

log = logging.getLogger(__name__)

MAX_NAME = 31
MAX_ELEM = 1048576
PREFIXES = ("cali40", "cali60")
TEMP = {4: "cali4t", 6: "cali6t"}
UNKNOWN: Any = object()


class IpsetError(RuntimeError):
    def __init__(self, message: str, script: str = "") -> None:
        super().__init__(message)
        self.script = script


@dataclass(frozen=True)
class SetSpec:
    kind: str  # "hash:net" | "hash:ip,port"
    version: int

    def create(self, name: str) -> str:
        family = "inet" if self.version == 4 else "inet6"
        return f"create {name} {self.kind} family {family} maxelem {MAX_ELEM}"


def set_name(set_id: str, version: int) -> str:
    """``s:<hash>`` -> ``cali40s:<hash>`` (31 characters at most)."""
    return f"cali{version}0{set_id}"[:MAX_NAME]


def run_ipset(args: list[str], stdin: Optional[str] = None) -> str:
    proc = subprocess.run(["ipset", *args], input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise IpsetError(f"ipset {' '.join(args)}: {proc.stderr.strip()}", stdin or "")
    return proc.stdout


def kernel_sets() -> dict[str, frozenset[str]]:
    """Our sets (cali40*/cali60*) in the kernel with their members."""
    out: dict[str, set[str]] = {}
    for line in run_ipset(["save"]).splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[1].startswith(PREFIXES):
            continue
        if parts[0] == "create":
            out.setdefault(parts[1], set())
        elif parts[0] == "add":
            out.setdefault(parts[1], set()).add(_canon(parts[2]))
    return {k: frozenset(v) for k, v in out.items()}


def _canon(member: str) -> str:
    """ipset prints host entries of hash:net without /32 and ports with their protocol."""
    if member.endswith("/32") or member.endswith("/128"):
        member = member.rsplit("/", 1)[0]
    return member


def destroy_all() -> list[str]:
    """Destroy every cali40*/cali60* set (back-end switch cleanup); returns their names."""
    names = [n for n in run_ipset(["list", "-n"]).split() if n.startswith(PREFIXES + tuple(TEMP.values()))]
    if names:
        run_ipset(["restore"], "".join(f"destroy {n}\n" for n in names))
    return names


class IpsetManager:
    def __init__(self) -> None:
        self.sets: dict[str, SetSpec] = {}
        self.members: dict[str, frozenset[str]] = {}
        self._p_sets: dict[str, SetSpec] = {}
        self._p_members: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._pending_delete: set[str] = set()
        self.resync_needed = True
        self.last_script = ""

    # -- writers -----------------------------------------------------------------

    def set(self, name: str, spec: SetSpec, members: Iterable[str]) -> None:
        m = frozenset(_canon(x) for x in members)
        if self.sets.get(name) == spec and self.members.get(name) == m:
            return
        self.sets[name] = spec
        self.members[name] = m
        self._dirty.add(name)
        self._pending_delete.discard(name)

    def remove(self, name: str) -> None:
        if name in self.sets:
            del self.sets[name]
            del self.members[name]
            self._dirty.discard(name)
            self._pending_delete.add(name)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._pending_delete or self.resync_needed)

    # -- apply -------------------------------------------------------------------

    def _resync(self) -> None:
        """Learn what the kernel holds (start-up): leftovers become deletions,
        existing sets are rebuilt by swap."""
        have = kernel_sets()
        self._p_sets = {}
        self._p_members = {}
        for name in have:
            if name.startswith(tuple(TEMP.values())):
                self._pending_delete.add(name)
                continue
            self._p_sets[name] = SetSpec("unknown", 4 if name.startswith("cali4") else 6)
            self._p_members[name] = UNKNOWN
            if name in self.sets:
                self._dirty.add(name)
            else:
                self._pending_delete.add(name)
        self.resync_needed = False

    def apply_updates(self) -> bool:
        """Create / fill / update the sets (before the rules that use them)."""
        if self.resync_needed:
            self._resync()
        if not self._dirty:
            return False
        lines: list[str] = []
        temp_n = 0
        for name in sorted(self._dirty):
            spec, want = self.sets[name], self.members[name]
            have = self._p_members.get(name)
            if name not in self._p_sets:
                lines.append(spec.create(name))
                lines.extend(f"add {name} {m}" for m in sorted(want))
            elif have is UNKNOWN or self._p_sets[name] != spec:
                temp = f"{TEMP[spec.version]}{temp_n}"
                temp_n += 1
                lines.append(spec.create(temp))
                lines.extend(f"add {temp} {m}" for m in sorted(want))
                if self._p_sets[name] != spec and self._p_sets[name].kind != "unknown":
                    # Different type: swap needs the same type; recreate in place.
                    lines.append(f"destroy {temp}")
                    lines.append(f"flush {name}")
                    lines.extend(f"add {name} {m}" for m in sorted(want))
                else:
                    lines.append(f"swap {name} {temp}")
                    lines.append(f"destroy {temp}")
            else:
                lines.extend(f"del {name} {m} -exist" for m in sorted(have - want))
                lines.extend(f"add {name} {m} -exist" for m in sorted(want - have))
        script = "\n".join(lines) + "\n"
        self.last_script = script
        try:
            run_ipset(["restore"], script)
        except IpsetError:
            self.resync_needed = True
            raise
        for name in self._dirty:
            self._p_sets[name] = self.sets[name]
            self._p_members[name] = self.members[name]
        self._dirty.clear()
        return True

    def apply_deletions(self) -> bool:
        """Destroy sets no longer wanted (after the rules that used them)."""
        gone = sorted(n for n in self._pending_delete if n not in self.sets)
        self._pending_delete.clear()
        if not gone:
            return False
        existing = set(run_ipset(["list", "-n"]).split())
        script = "".join(f"destroy {n}\n" for n in gone if n in existing)
        if script:
            try:
                run_ipset(["restore"], script)
            except IpsetError as exc:
                log.warning("could not destroy IP sets (still referenced?): %s", exc)
                self._pending_delete.update(gone)
                raise
        for n in gone:
            self._p_sets.pop(n, None)
            self._p_members.pop(n, None)
        return True

    def verify(self) -> list[str]:
        """Compare the kernel's sets with the programmed ones; mark drift."""
        if self.resync_needed:
            return []
        have = kernel_sets()
        problems: list[str] = []
        for name in list(self._p_sets):
            if name not in have:
                problems.append(f"IP set {name} is missing")
                del self._p_sets[name]
                self._p_members.pop(name, None)
                if name in self.sets:
                    self._dirty.add(name)
            elif self._p_members.get(name) is not UNKNOWN and have[name] != self._p_members[name]:
                problems.append(f"IP set {name} content differs")
                self._p_members[name] = UNKNOWN
                if name in self.sets:
                    self._dirty.add(name)
        for name in have:
            if name not in self._p_sets and not name.startswith(tuple(TEMP.values())):
                problems.append(f"unexpected IP set {name}")
                self._p_sets[name] = SetSpec("unknown", 4 if name.startswith("cali4") else 6)
                self._p_members[name] = UNKNOWN
                if name in self.sets:
                    self._dirty.add(name)
                else:
                    self._pending_delete.add(name)
        return problems
