"""Boxed tables as upstream prints them for ``ipam show`` and ``node status``
(go-pretty / tablewriter default style): ``+---+`` borders, headers centred,
cells padded by one space, chosen columns right-aligned."""
from __future__ import annotations

from typing import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def centre(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    def line(cells: Sequence[str], header: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            if header:
                text = centre(cell, widths[i])
            elif i in right:
                text = cell.rjust(widths[i])
            else:
                text = cell.ljust(widths[i])
            out.append(f" {text} ")
        return "|" + "|".join(out) + "|\n"

    return border + line(headers, True) + border + "".join(line(r, False) for r in rows) + border
