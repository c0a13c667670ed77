"""The table every chaos scenario prints (and returns to bench scripts)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChaosReport:
    scenario: str
    attempted: int = 0
    succeeded: int = 0
    failed_cleanly: int = 0
    failed_badly: int = 0  # no JSON, a traceback, or internal error 199: must be 0
    duplicates: int = 0  # addresses held by two workloads: must be 0
    leaks_after_gc: int = 0  # allocations / endpoints / veths without a live workload: must be 0
    converge_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)

    def table(self) -> str:
        rows = [
            ("operations attempted", str(self.attempted)),
            ("succeeded", str(self.succeeded)),
            ("failed cleanly (error JSON)", str(self.failed_cleanly)
             + (f"  codes {dict(sorted(self.codes.items()))}" if self.codes else "")),
            ("failed badly", str(self.failed_badly)),
            ("duplicates", str(self.duplicates)),
            ("leaks after GC", str(self.leaks_after_gc)),
            ("time to converge", f"{self.converge_s:.1f} s"),
        ] + [("note", n) for n in self.notes]
        width = max(len(k) for k, _ in rows)
        lines = [f"== chaos: {self.scenario}"] + [f"  {k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines)

    def check(self) -> None:
        assert self.failed_badly == 0, self.table()
        assert self.duplicates == 0, self.table()
        assert self.leaks_after_gc == 0, self.table()
        assert self.succeeded + self.failed_cleanly == self.attempted, self.table()
        assert self.converge_s != float("inf"), "did not converge\n" + self.table()
