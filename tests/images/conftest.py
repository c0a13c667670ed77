"""Fixtures for the container image tests: the OCI archives from packaging/images/build.

The build is cached by input hash in ``$PYCALICO_CACHE/images`` (a rerun with
nothing changed takes about a second, plus the bundle's own cache check);
``PYCALICO_IMAGES=<dir>`` uses archives built before, ``PYCALICO_BUNDLE=<dir>``
builds from a given bundle.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from tests.support.cni_exec import REPO

BUILD = os.path.join(REPO, "packaging", "images", "build")


@dataclass
class Image:
    name: str
    ref: str
    archive: str


@pytest.fixture(scope="session")
def images() -> dict[str, Image]:
    if not shutil.which("buildah"):
        pytest.skip("buildah is installed by scripts/setup")
    directory = os.environ.get("PYCALICO_IMAGES")
    if not directory:
        proc = subprocess.run([BUILD], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            pytest.fail(f"packaging/images/build failed:\n{proc.stderr[-4000:]}")
        directory = proc.stdout.strip().splitlines()[-1]
    with open(os.path.join(directory, "images.json")) as f:
        meta = json.load(f)
    return {i["name"]: Image(i["name"], i["ref"], os.path.join(directory, i["archive"])) for i in meta["images"]}
