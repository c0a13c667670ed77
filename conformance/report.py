"""The per-rule pass/fail table and the failure details."""
from __future__ import annotations

from collections import Counter

from conformance.runner import ERROR, EXEC_ONLY, FAIL, FAILING, NA, XFAIL, XPASS, RuleResult

_CELL = {EXEC_ONLY: "-", NA: "n/a"}


def render(results: list[RuleResult], versions: list[str], drivers: list[str], elapsed: float) -> str:
    by_key = {(r.rule, r.driver, r.version): r for r in results}
    rules: list[tuple[str, str]] = []
    for r in results:
        if (r.rule, r.section) not in rules:
            rules.append((r.rule, r.section))
    w_rule = max([len("RULE")] + [len(n) for n, _ in rules])
    w_cell = max(6, *(len(v) for v in versions))
    lines = [
        f"{'RULE':<{w_rule}}  {'DRIVER':<7}  " + "  ".join(f"{v:<{w_cell}}" for v in versions) + "  SPEC SECTION",
    ]
    for name, section in rules:
        for i, driver in enumerate(drivers):
            row = [by_key.get((name, driver, v)) for v in versions]
            present = [c for c in row if c is not None]
            if not present:
                continue
            if all(c.status == EXEC_ONLY for c in present):
                cells = "  ".join(f"{'-':<{w_cell}}" for _ in versions)
                tail = f"exec-only: {present[0].message}"
            else:
                cells = "  ".join(f"{_CELL.get(c.status, c.status) if c else '':<{w_cell}}" for c in row)
                tail = section
            label = name if i == 0 else ""
            lines.append(f"{label:<{w_rule}}  {driver:<7}  {cells}  {tail}")
    counts = Counter(r.status for r in results if r.status not in (EXEC_ONLY, NA))
    details = [r for r in results if r.status in (*FAILING, XFAIL, XPASS)]
    if details:
        lines.append("")
        lines.append("Details (first message per rule and driver):")
        groups: dict[tuple[str, str, str], list[RuleResult]] = {}
        for r in details:
            groups.setdefault((r.rule, r.driver, r.status), []).append(r)
        for (rule, driver, status), group in groups.items():
            first = group[0]
            head = f"  [{status}] {rule} ({driver}; cniVersion {', '.join(r.version for r in group)})"
            if status in (XFAIL, XPASS):
                head += f" - expected unimplemented: {first.expected_reason}"
            lines.append(head)
            if first.message and status != XPASS:
                lines.append(f"      {first.message}")
    noted = [r for r in results if r.notes]
    if noted:
        lines.append("")
        lines.append("Notes:")
        for r in noted:
            for n in r.notes:
                lines.append(f"  {r.rule} ({r.driver}, {r.version}): {n}")
    summary = ", ".join(f"{counts[s]} {s}" for s in ("pass", FAIL, ERROR, XFAIL, XPASS) if counts[s])
    verdict = "FAILED" if counts[FAIL] or counts[ERROR] else "PASSED"
    lines.append("")
    lines.append(f"{verdict}: {summary or 'nothing ran'} in {elapsed:.1f}s")
    return "\n".join(lines)
