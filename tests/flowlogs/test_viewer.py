"""The flow viewer page in headless Chromium (Debian ``chromium``): a denied
probe shows up in the page's flow list, filterable by namespace / pod /
verdict, and the page's explain view names the rule that denied it. A
screenshot is saved in the test's tmp dir."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from typing import Any, Optional

import pytest

from tests.felix.harness import Cluster
from tests.flowlogs.test_flowlogs import deny_policy, probe, staged_deny

pytestmark = [pytest.mark.etcd, pytest.mark.netns]


class Dom(HTMLParser):
    """Elements with their attributes and text (enough for assertions)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._stack: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        el = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(el)
        if tag not in ("input", "br", "meta", "img", "link"):
            self._stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for el in self._stack:
            el["text"] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, Any]]:
        out = []
        for el in self.elements:
            if el["tag"] != tag:
                continue
            if all(v in (el["attrs"].get("class") or "").split() if k == "class_"
                   else el["attrs"].get(k) == v for k, v in attrs.items()):
                out.append(el)
        return out

    def by_id(self, ident: str) -> Optional[dict[str, Any]]:
        return next((el for el in self.elements if el["attrs"].get("id") == ident), None)


def chromium(*args: str, profile: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    assert exe, "Debian chromium is required (scripts/setup installs it)"
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={profile}", "--virtual-time-budget=4000", *args],
                          capture_output=True, text=True, timeout=90)


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def test_viewer_lists_denied_flow_and_explains_it(flow_cluster: Cluster, tmp_path: Any) -> None:
    c = flow_cluster
    port = c.viewer_port  # type: ignore[attr-defined]
    c.set_policies([deny_policy(c), staged_deny(c)])
    xb, ya = c.pod("x/b"), c.pod("y/a")
    ns_y = c.ns("y")
    t0 = time.time()
    assert not probe(xb, ya, "tcp", 80)
    flow_id = None
    deadline = time.monotonic() + 15
    while flow_id is None and time.monotonic() < deadline:
        for f in api(port, f"/api/flows?namespace={ns_y}&verdict=deny")["flows"]:
            if f["source_ip"] == xb.ip and f["dest_ip"] == ya.ip and f["dest_port"] == 80:
                flow_id = f["id"]
                break
        else:
            time.sleep(0.1)
    assert flow_id is not None, c.felix.log_tail(30)
    print(f"denied flow listed by the viewer API after {(time.time() - t0) * 1000:.0f} ms")
    profile = str(tmp_path / "chromium-profile")

    # The page, filtered to the destination namespace, pod and verdict.
    url = f"http://127.0.0.1:{port}/?namespace={ns_y}&pod=a&verdict=deny"
    res = chromium("--dump-dom", url, profile=profile)
    dom = Dom(res.stdout)
    assert dom.find("body", **{"data-loaded": "flows"}), res.stdout[-2000:] + res.stderr[-2000:]
    rows = dom.find("tr", class_="flow")
    assert rows and all(r["attrs"]["data-action"] == "deny" for r in rows), [r["text"] for r in rows]
    row = next(r for r in rows if r["attrs"]["data-id"] == str(flow_id))
    assert f"{c.ns('x')}/b" in row["text"] and f"{ns_y}/a" in row["text"] and "tcp/80" in row["text"]
    assert f"np/{ns_y}/deny-x-80 rule 1" in row["text"]
    # The verdict filter works: allow-only lists no denied record.
    dom = Dom(chromium("--dump-dom", f"http://127.0.0.1:{port}/?namespace={ns_y}&verdict=allow",
                       profile=profile).stdout)
    assert all(r["attrs"]["data-action"] == "allow" for r in dom.find("tr", class_="flow"))

    # The explain view of the selected flow names the same rule.
    url = f"http://127.0.0.1:{port}/?namespace={ns_y}&verdict=deny&flow={flow_id}"
    res = chromium("--dump-dom", url, profile=profile)
    dom = Dom(res.stdout)
    assert dom.find("body", **{"data-explained": str(flow_id)}), res.stdout[-2000:]
    decided = dom.by_id("decided-by")
    assert decided is not None and f"ingress np/{ns_y}/deny-x-80 rule 1: Deny" in decided["text"], decided
    assert "DENY" in (dom.by_id("verdict") or {}).get("text", "")
    assert [r for r in dom.find("tr", class_="selected") if r["attrs"]["data-id"] == str(flow_id)]
    assert len(dom.find("tr", class_="step")) >= 2

    shot = tmp_path / "flow-viewer.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1280,900", url, profile=profile)
    assert shot.exists() and shot.stat().st_size > 5000, res.stderr[-2000:]
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_viewer_is_local_only(flow_cluster: Cluster) -> None:
    import socket

    port = flow_cluster.viewer_port  # type: ignore[attr-defined]
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    local = [line.split()[3] for line in out.splitlines() if line.strip()]
    assert local == [f"127.0.0.1:{port}"], out
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert os.path.exists(os.path.join(flow_cluster.flowlog_dir, "flows.log"))  # type: ignore[attr-defined]
