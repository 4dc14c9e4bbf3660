"""Markdown tables for the benchmark scripts' printed results."""

from __future__ import annotations

from typing import Sequence


def markdown_table(rows: Sequence[Sequence[str]], text_columns: int = 2) -> str:
    """rows[0] is the header. The first `text_columns` columns are left-aligned, the rest (numbers)
    right-aligned; every column as wide as its widest cell."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]

    def format_line(cells):
        return "| " + " | ".join(cell.ljust(width) if column < text_columns else cell.rjust(width)
                                 for column, (cell, width) in enumerate(zip(cells, widths))) + " |"

    lines = [format_line(rows[0]), "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    return "\n".join(lines + [format_line(row) for row in rows[1:]])
