"""The flow viewer page (one self-contained HTML document, no external assets)."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pycalico flows</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1.2em; color: #222; }
 h1 { font-size: 1.3em; margin: 0 0 .6em; }
 form { margin-bottom: .8em; }
 form label { margin-right: 1em; }
 table { border-collapse: collapse; width: 100%; }
 th, td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: left; white-space: nowrap; }
 th { background: #f3f3f3; }
 tr.flow { cursor: pointer; }
 tr.flow:hover { background: #eef5ff; }
 tr.selected { background: #dde9ff; }
 .deny { color: #b00020; font-weight: 600; }
 .allow { color: #1b7f2a; font-weight: 600; }
 #explain { margin-top: 1.2em; padding: .8em; border: 1px solid #ccc; border-radius: 4px; }
 #explain h2 { font-size: 1.1em; margin: 0 0 .4em; }
 #explain h3 { font-size: 1em; margin: .8em 0 .3em; }
 .muted { color: #777; }
</style>
</head>
<body>
<h1>Flows <span class="muted" id="status"></span></h1>
<form id="filters">
 <label>Namespace <input name="namespace" id="f-namespace" size="18"></label>
 <label>Pod <input name="pod" id="f-pod" size="14"></label>
 <label>Verdict <select name="verdict" id="f-verdict">
  <option value="">any</option><option value="allow">allow</option><option value="deny">deny</option>
 </select></label>
 <button type="submit">Filter</button>
</form>
<table id="flows">
 <thead><tr><th>Time</th><th>Reporter</th><th>Source</th><th>Destination</th><th>Proto/port</th>
  <th>Action</th><th>Policy / rule</th><th>Staged</th><th>Flows</th></tr></thead>
 <tbody></tbody>
</table>
<div id="explain" hidden></div>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const form = document.getElementById("filters");
for (const k of ["namespace", "pod", "verdict"]) {
  document.getElementById("f-" + k).value = params.get(k) || "";
}
let selected = params.get("flow");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}
function who(ns, name, ip) { return ns === "-" ? ip : ns + "/" + name; }
function ruleText(r) {
  if (!r) return "";
  if (r.kind === "tier-default") return "end of tier " + r.name;
  if (r.kind === "no-match") return "no policy or profile matched";
  return r.name + (r.index == null ? "" : " rule " + r.index);
}
function query() {
  const q = new URLSearchParams();
  for (const k of ["namespace", "pod", "verdict"]) {
    const v = document.getElementById("f-" + k).value;
    if (v) q.set(k, v);
  }
  return q;
}
async function loadFlows() {
  const resp = await fetch("/api/flows?" + query().toString());
  const data = await resp.json();
  const body = document.querySelector("#flows tbody");
  body.replaceChildren();
  for (const f of data.flows) {
    const tr = el("tr", {"class": "flow" + (String(f.id) === selected ? " selected" : ""),
                         "data-id": f.id, "data-action": f.action},
      el("td", {}, new Date(f.start_time * 1000).toLocaleTimeString()),
      el("td", {}, f.reporter),
      el("td", {"class": "src"}, who(f.source_namespace, f.source_name, f.source_ip)),
      el("td", {"class": "dst"}, who(f.dest_namespace, f.dest_name, f.dest_ip)),
      el("td", {}, f.proto + "/" + f.dest_port),
      el("td", {"class": "action " + f.action}, f.action),
      el("td", {"class": "rule"}, ruleText(f.rule)),
      el("td", {"class": "pending"}, f.pending_action ? "would " + f.pending_action : ""),
      el("td", {}, f.num_flows));
    tr.addEventListener("click", () => { selected = String(f.id); showExplain(selected); loadFlows(); });
    body.append(tr);
  }
  document.getElementById("status").textContent = "(" + data.flows.length + " records)";
  document.body.setAttribute("data-loaded", "flows");
}
function stepsTable(side) {
  const t = el("table", {"class": "steps"},
    el("tr", {}, el("th", {}, "#"), el("th", {}, "Tier"), el("th", {}, "Kind"), el("th", {}, "Policy / profile"),
       el("th", {}, "Rule"), el("th", {}, "Result")));
  side.steps.forEach((s, i) => t.append(el("tr", {"class": "step"},
    el("td", {}, i + 1), el("td", {}, s.tier || "-"), el("td", {}, s.kind),
    el("td", {}, (s.staged ? "staged:" : "") + (s.name || "-")),
    el("td", {}, s.rule == null ? "-" : s.rule), el("td", {}, s.result))));
  return t;
}
async function showExplain(id) {
  const box = document.getElementById("explain");
  const resp = await fetch("/api/explain?id=" + encodeURIComponent(id));
  const data = await resp.json();
  box.hidden = false;
  box.replaceChildren();
  if (!resp.ok) { box.append(el("p", {}, data.error)); return; }
  const x = data.explain, d = x.decidedBy;
  box.append(el("h2", {}, "Explain: " + who(data.flow.source_namespace, data.flow.source_name, data.flow.source_ip)
    + " \\u2192 " + who(data.flow.dest_namespace, data.flow.dest_name, data.flow.dest_ip)
    + " " + data.flow.proto + "/" + data.flow.dest_port));
  box.append(el("p", {"id": "verdict"}, "Verdict: ",
    el("span", {"class": x.verdict.toLowerCase()}, x.verdict.toUpperCase())));
  if (d) box.append(el("p", {"id": "decided-by"}, "Decided by " + d.direction.toLowerCase() + " "
    + ruleText({kind: d.kind, name: d.name, index: d.rule}) + ": " + d.result));
  for (const dir of ["egress", "ingress"]) {
    if (!x[dir]) continue;
    const ep = dir === "egress" ? x.source : x.destination;
    const name = ep ? ep.namespace + "/" + ep.pod : x[dir].endpoint;
    box.append(el("h3", {}, dir[0].toUpperCase() + dir.slice(1) + " of " + name + " (node " + x[dir].node + "): "
      + x[dir].verdict));
    box.append(stepsTable(x[dir]));
  }
  if (x.staged) {
    const sd = x.staged.decidedBy;
    box.append(el("p", {"id": "staged"}, "Staged policies: " + x.staged.summary
      + (sd ? " (" + ruleText({kind: sd.kind, name: (sd.staged ? "staged:" : "") + sd.name, index: sd.rule}) + ")" : "")));
  }
  document.body.setAttribute("data-explained", id);
}
form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = query();
  if (selected) q.set("flow", selected);
  history.replaceState(null, "", "?" + q.toString());
  loadFlows();
});
loadFlows();
if (selected) showExplain(selected);
setInterval(loadFlows, 2000);
</script>
</body>
</html>
"""
