"""``calicoctl node diags [--log-dir=DIR]``: gather this host's diagnostics into
``diags-<YYYYmmdd_HHMMSS>.tar.gz`` inside a new ``calico*`` directory under
the temp dir (``$TMPDIR``, else /tmp), as upstream.

The tarball holds ``diagnostics/``: the output of each command below (one
file each, written even when the command fails, as upstream), the BIRD
daemons' state read from their control sockets (``show status``,
``show protocols all``, ``show route``), and a copy of the Calico log
directory (``--log-dir``, default /var/log/calico) under ``logs/``.

Differences from upstream, for this product: the nftables ruleset is dumped
(our data plane's default), BIRD is asked directly, and there is no
``pkill -SIGUSR1 felix`` (our Felix takes no stats signal; the signal would
stop it) nor ``docker``/``journalctl`` container-log collection.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from typing import Callable

from calicoctl.commands import CommandError

Out = Callable[[str], None]
COMMAND_TIMEOUT = 30.0

# (what is printed, command, file in diagnostics/)
COMMANDS: list[tuple[str, list[str], str]] = [
    ("", ["date"], "date"),
    ("", ["hostname"], "hostname"),
    ("Dumping netstat", ["netstat", "-a", "-n"], "netstat"),
    ("Dumping sockets", ["ss", "-a", "-n", "-p"], "ss"),
    ("Dumping routes (IPv4)", ["ip", "-4", "route"], "ipv4_route"),
    ("Dumping routes (IPv6)", ["ip", "-6", "route"], "ipv6_route"),
    ("Dumping routing rules", ["ip", "rule"], "ip_rule"),
    ("Dumping interface info (IPv4)", ["ip", "-4", "addr"], "ipv4_addr"),
    ("Dumping interface info (IPv6)", ["ip", "-6", "addr"], "ipv6_addr"),
    ("Dumping links", ["ip", "-d", "link"], "links"),
    ("Dumping nftables ruleset", ["nft", "list", "ruleset"], "nft_ruleset"),
    ("Dumping iptables (IPv4)", ["iptables-save", "-c"], "ipv4_tables"),
    ("Dumping iptables (IPv6)", ["ip6tables-save", "-c"], "ipv6_tables"),
    ("Dumping ipsets", ["ipset", "list"], "ipsets"),
]
BIRD_COMMANDS = [("show status", "status"), ("show protocols all", "protocols"), ("show route", "routes")]


def _run(argv: list[str]) -> tuple[bytes, str | None]:
    """The command's combined output, and an error text when it failed."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return b"", f'exec: "{argv[0]}": executable file not found in $PATH'
    except subprocess.TimeoutExpired as e:
        return e.stdout or b"", f"timed out after {COMMAND_TIMEOUT:g}s"
    if proc.returncode != 0:
        return proc.stdout, proc.stdout.decode(errors="replace")
    return proc.stdout, None


def _bird(diags: str, out: Out) -> None:
    from bird.control import BirdControl, BirdError

    from calicoctl.nodestatus import _socket

    for daemon, sock in (("bird", "bird.ctl"), ("bird6", "bird6.ctl")):
        path = _socket(sock)
        if not path or not os.path.exists(path):
            continue
        out(f"Dumping BIRD state ({path})\n")
        try:
            with BirdControl(path, timeout=5.0) as ctl:
                for command, suffix in BIRD_COMMANDS:
                    reply = ctl.command(command)
                    text = "\n".join(line for _, line in reply.lines) + "\n"
                    with open(os.path.join(diags, f"{daemon}_{suffix}"), "w", encoding="utf-8") as f:
                        f.write(text)
        except BirdError as e:
            out(f"Failed to query BIRD at {path}: {e}\n")


def collect(log_dir: str, out: Out) -> str:
    """Write the tarball; returns its path."""
    out("Collecting diagnostics\n")
    try:
        tmp_dir = tempfile.mkdtemp(prefix="calico")
    except OSError as e:
        raise CommandError(f"Error creating temp directory to dump logs: {e}") from None
    out(f"Using temp dir: {tmp_dir}\n")
    diags = os.path.join(tmp_dir, "diagnostics")
    os.mkdir(diags)
    for info, argv, name in COMMANDS:
        if info:
            out(f"{info}\n")
        content, error = _run(argv)
        if error is not None:
            out(f"Failed to run command: {' '.join(argv)}\nError: {error}\n")
        with open(os.path.join(diags, name), "wb") as f:
            f.write(content)
    _bird(diags, out)

    logs = os.path.join(diags, "logs")
    if not os.path.exists(log_dir):
        out(f"Error copying log files: stat {log_dir}: no such file or directory\n")
    elif os.path.isdir(log_dir):
        out("Copying Calico logs\n")
        try:
            shutil.copytree(log_dir, logs, symlinks=True)
        except (OSError, shutil.Error) as e:
            out(f"Error copying log files: {e}\n")
    else:
        out(f"No logs found in {log_dir}; skipping log copying\n")

    tar_path = os.path.join(tmp_dir, f"diags-{time.strftime('%Y%m%d_%H%M%S')}.tar.gz")
    try:
        with tarfile.open(tar_path, "w:gz") as tar:
            tar.add(diags, arcname="diagnostics")
    except (OSError, tarfile.TarError) as e:
        out(f"Error compressing the diagnostics: {e}\n")
    return tar_path


def run(args: argparse.Namespace, out: Out) -> None:
    if os.geteuid() != 0:
        raise CommandError("This command must be run as root.")
    tar_path = collect(args.log_dir, out)
    out(f"\nDiags saved to {tar_path}\n")
    out("If required, you can upload the diagnostics bundle to a file sharing service\n"
        "such as transfer.sh using curl or similar.  For example:\n\n"
        f"    curl --upload-file {tar_path} https://transfer.sh/{os.path.basename(tar_path)}\n")
