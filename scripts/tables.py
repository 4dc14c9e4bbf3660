"""What the benchmark scripts share: markdown tables of their results, the --torch-threads flag."""

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


def torch_thread_counts(parser, text: str) -> list:
    """--torch-threads "1,2" -> [1, 2] (distinct, in order): one official process per count; a bad value
    stops the script through `parser.error`."""
    try:
        counts = list(dict.fromkeys(int(n) for n in text.split(",")))
    except ValueError:
        parser.error(f"--torch-threads must be comma-separated ints, got {text!r}")
    if min(counts) < 1:
        parser.error(f"--torch-threads must be >= 1 each, got {counts}")
    return counts
