"""Help for every command, shell completion, version, and the exit status
convention, through the real executable where it matters."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from calicoctl.main import build_parser
from tests.calicoctl.conftest import CALICOCTL, Calicoctl, base_env


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _walk(sub, path + (name,))
    return out


def test_every_command_has_help() -> None:
    commands = _walk(build_parser())
    assert len(commands) >= 20
    for path, parser in commands:
        text = parser.format_help()
        assert text.startswith("usage: calicoctl"), path
        assert parser.description or parser.epilog, f"{' '.join(path)} has no description"


def test_help_and_completion_through_the_executable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = base_env()
    top = subprocess.run([CALICOCTL, "--help"], capture_output=True, text=True, env=env)
    assert top.returncode == 0 and "ipam" in top.stdout and "completion" in top.stdout
    get = subprocess.run([CALICOCTL, "get", "--help"], capture_output=True, text=True, env=env)
    assert get.returncode == 0 and "--all-namespaces" in get.stdout and "* ipPool" in get.stdout
    check = subprocess.run([CALICOCTL, "ipam", "check", "--help"], capture_output=True, text=True, env=env)
    assert check.returncode == 0 and "--show-problem-ips" in check.stdout

    script = subprocess.run([CALICOCTL, "completion", "bash"], capture_output=True, text=True, env=env)
    assert script.returncode == 0
    path = tmp_path / "calicoctl.bash"
    path.write_text(script.stdout)
    probe = f"""source {path}
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _calicoctl; echo "${{COMPREPLY[*]}}"; }}
t calicoctl ge
t calicoctl get ippo
t calicoctl ipam ""
t calicoctl get -o ya
t calicoctl delete pool p1 --skip-n
"""
    lines = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == ["get", "ippool ippools", "check configure release show split --help -h", "yaml", "--skip-not-exists"]


@pytest.mark.etcd
def test_version(calicoctl_etcd: Calicoctl) -> None:
    client = calicoctl_etcd.ok("version", "--client", env={"ETCD_ENDPOINTS": "http://127.0.0.1:9"})
    assert client.stdout.startswith("Client Version:    v")
    # The first write command initialises ClusterInformation, as upstream's does.
    calicoctl_etcd.ok("apply", "-f", "-", input="apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t1\n")
    full = calicoctl_etcd.ok("version").stdout.splitlines()
    assert [line.split(":")[0] for line in full] == ["Client Version", "Git commit", "Cluster Version", "Cluster Type"]
    assert full[2] == "Cluster Version:   unknown"
    down = calicoctl_etcd("version", env={"ETCD_ENDPOINTS": "http://127.0.0.1:9"})
    assert down.returncode == 1 and down.stderr.startswith("Unable to retrieve Cluster Version or Type: ")


def test_bad_command_line_exits_1() -> None:
    result = subprocess.run([CALICOCTL, "get", "--bogus"], capture_output=True, text=True, env=base_env())
    assert result.returncode == 1
    assert result.stderr.startswith("Invalid option: 'calicoctl get --bogus'. Use flag '--help'")
