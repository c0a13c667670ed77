"""Uniquely named network namespaces for tests, always removed."""
from __future__ import annotations

import os
import subprocess
import uuid


class Netns:
    def __init__(self, prefix: str = "pct") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.path = f"/var/run/netns/{self.name}"

    def __enter__(self) -> "Netns":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def delete(self) -> None:
        if os.path.exists(self.path):
            subprocess.run(["ip", "netns", "del", self.name], check=False)

    def run(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, check=check)

    def ping(self, address: str, count: int = 1) -> bool:
        return self.run("ping", "-c", str(count), "-W", "2", address).returncode == 0


def host_ping(address: str) -> bool:
    return subprocess.run(["ping", "-c", "1", "-W", "2", address], capture_output=True).returncode == 0


def cali_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        name = line.split(": ")[1].split("@")[0]
        if name.startswith("cali"):
            names.add(name)
    return names
