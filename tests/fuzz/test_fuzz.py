"""Fuzzing in CI: replay the checked-in corpora, then fuzz each target for a
bounded time with atheris (coverage-guided libFuzzer).

Any exception other than a target's documented error types is a failure; the
crashing input is copied next to the test's tmp dir and its path printed, to be
added to ``tests/fuzz/corpus/<target>/`` once fixed.

``PYCALICO_FUZZ_SECONDS`` sets the fuzzing time per target (default 6; with
start-up about 1.5 minutes for all targets on a loaded 2-core machine);
``PYCALICO_FUZZ_SEED`` libFuzzer's seed (default 1, so a CI run is
reproducible; 0 picks a random one). For a long run by hand::

    python -m tests.fuzz.run selector -max_total_time=600 /tmp/work tests/fuzz/corpus/selector
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tests.fuzz.targets import TARGETS

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
SECONDS = int(os.environ.get("PYCALICO_FUZZ_SECONDS", "6"))
SEED = int(os.environ.get("PYCALICO_FUZZ_SEED", "1"))  # libFuzzer's seed: CI runs are reproducible


def _corpus(target: str) -> list[str]:
    return sorted(glob.glob(os.path.join(CORPUS, target, "*")))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays_cleanly(target: str) -> None:
    files = _corpus(target)
    assert files, f"no seed corpus for {target}"
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            TARGETS[target](data)
        except Exception as exc:  # noqa: BLE001 - report which corpus file
            raise AssertionError(f"{target}: corpus input {path} raised {exc!r}") from exc


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz(target: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "corpus"
    work.mkdir()
    cmd = [
        sys.executable, "-m", "tests.fuzz.run", target,
        f"-max_total_time={SECONDS}", f"-seed={SEED}", "-max_len=4096", "-timeout=20", "-rss_limit_mb=1024",
        f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
        str(work), os.path.join(CORPUS, target),
    ]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=SECONDS + 120)
    log = proc.stderr
    runs = [line for line in log.splitlines() if line.startswith("stat::number_of_executed_units")]
    print(f"{target}: {runs[-1] if runs else 'no stats'}")
    if proc.returncode != 0:
        crashes = sorted(glob.glob(str(tmp_path / "crash-*")) + glob.glob(str(tmp_path / "timeout-*"))
                         + glob.glob(str(tmp_path / "oom-*")))
        tail = "\n".join(log.splitlines()[-40:])
        pytest.fail(f"fuzzer {target} failed (exit {proc.returncode}); inputs: {crashes}\n{tail}")
    assert runs, f"no libFuzzer stats from {target}:\n{log[-2000:]}"
