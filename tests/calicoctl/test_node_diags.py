"""``calicoctl node diags`` on this host, with a real BIRD to query: a tarball
under $TMPDIR holding the command dumps, the BIRD state and the Calico logs."""
from __future__ import annotations

import os
import re
import subprocess
import tarfile
from typing import Any

from tests.calicoctl.conftest import CALICOCTL, base_env
from tests.calicoctl.test_node_status import bird  # noqa: F401  (fixture: a real BIRD and its socket)


def test_node_diags(bird: str, tmp_path: Any) -> None:  # noqa: F811
    logs = tmp_path / "logs"
    (logs / "cni").mkdir(parents=True)
    (logs / "felix.log").write_text("felix was here\n")
    (logs / "cni" / "cni.log").write_text("cni was here\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**base_env(), "TMPDIR": str(out_dir), "CALICO_BIRD_SOCKET": bird}
    result = subprocess.run([CALICOCTL, "node", "diags", "--log-dir", str(logs)], capture_output=True, text=True,
                            env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Collecting diagnostics"
    assert lines[1].startswith(f"Using temp dir: {out_dir}/calico")
    assert "Dumping routes (IPv4)" in lines and "Dumping nftables ruleset" in lines
    assert f"Dumping BIRD state ({bird})" in lines and "Copying Calico logs" in lines
    m = re.search(r"^Diags saved to (\S+)$", result.stdout, re.M)
    assert m, result.stdout
    path = m.group(1)
    assert re.fullmatch(rf"{out_dir}/calico[^/]+/diags-\d{{8}}_\d{{6}}\.tar\.gz", path), path
    assert f"curl --upload-file {path} https://transfer.sh/{os.path.basename(path)}" in result.stdout

    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        text = {n: (tar.extractfile(n).read().decode(errors="replace") if tar.getmember(n).isfile() else "")
                for n in names}
    for name in ("date", "hostname", "ipv4_route", "ipv4_addr", "links", "nft_ruleset", "ipv4_tables",
                 "bird_status", "bird_protocols", "bird_routes"):
        assert f"diagnostics/{name}" in names, sorted(names)
    assert "127.0.0.1" in text["diagnostics/ipv4_addr"]
    assert text["diagnostics/hostname"].strip() == os.uname().nodename
    assert "BIRD" in text["diagnostics/bird_status"]
    assert "Mesh_127_0_0_2" in text["diagnostics/bird_protocols"]
    assert "Global_127_0_0_3" in text["diagnostics/bird_protocols"]
    assert text["diagnostics/logs/felix.log"] == "felix was here\n"
    assert text["diagnostics/logs/cni/cni.log"] == "cni was here\n"

    missing = subprocess.run([CALICOCTL, "node", "diags", "--log-dir", str(tmp_path / "nope")],
                             capture_output=True, text=True, env=env, timeout=180)
    assert missing.returncode == 0, missing.stderr
    assert f"Error copying log files: stat {tmp_path / 'nope'}: no such file or directory\n" in missing.stdout
