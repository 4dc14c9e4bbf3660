"""The normalized-score table of offline runs (TD3+BC, PRDC, each with and without HUBL), as markdown.

    python scripts/offline_table.py runs/td3bc runs/prdc [--last 1] [--out table.md]

Every run directory under the given folders (found by its config.json) is one cell's worth of seeds:
its agent, dataset and HUBL setting (config.json "launcher": dataset, hubl) name the row and column.
A seed's score is the mean normalized score of its last --last evaluations in eval.csv (0 = the
dataset's random reference, 100 = its expert reference; data/datasets.py normalized_score); a cell
is the mean over seeds +- the sample standard deviation across seeds (ddof 1), with the number of
seeds and the update of the last evaluation. Runs of one cell (same agent, dataset and HUBL setting)
are pooled: their seeds must differ. A run without evaluations, or unfinished (its last evaluation
before its config's num_updates), is reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np


def run_dirs(paths: Iterable[str]) -> list[Path]:
    """Every folder at or below the given paths that holds a config.json, in sorted order."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found += [p.parent for p in sorted(path.rglob("config.json"))]
    return found


def seed_scores(run_dir: Path, last: int) -> tuple[dict[int, float], int]:
    """({seed: mean normalized score of its last `last` evaluations}, the update of the last evaluation)."""
    by_seed: dict[int, list[tuple[int, float]]] = defaultdict(list)
    with open(run_dir / "eval.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_seed[int(float(row["seed"]))].append((int(float(row["step"])), float(row["normalized_score"])))
    scores, final_step = {}, 0
    for seed, rows in by_seed.items():
        rows.sort()
        scores[seed] = float(np.mean([score for _, score in rows[-last:]]))
        final_step = max(final_step, rows[-1][0])
    return scores, final_step


def collect(paths: Iterable[str], last: int) -> dict[tuple[str, str, str], dict]:
    """{(dataset, agent, hubl): {"scores": {seed: score}, "step": last update}} over all runs."""
    cells: dict[tuple[str, str, str], dict] = {}
    for run_dir in run_dirs(paths):
        config = json.loads((run_dir / "config.json").read_text())
        launcher = config.get("launcher", {})
        if "dataset" not in launcher or not (run_dir / "eval.csv").exists():
            print(f"skipped {run_dir}: not an offline run with evaluations", file=sys.stderr)
            continue
        key = (launcher["dataset"], config["agent"], launcher.get("hubl", "none"))
        scores, step = seed_scores(run_dir, last)
        planned = config.get("agent_config", {}).get("num_updates")
        if planned is not None and step < planned:
            print(f"skipped {run_dir}: unfinished (last evaluation at update {step:,} of {planned:,})", file=sys.stderr)
            continue
        cell = cells.setdefault(key, {"scores": {}, "step": step})
        repeated = set(cell["scores"]) & set(scores)
        if repeated:
            raise ValueError(f"{run_dir}: seeds {sorted(repeated)} of {key} already come from another run")
        cell["scores"].update(scores)
        cell["step"] = min(cell["step"], step)
    return cells


def format_cell(cell: dict | None) -> str:
    if cell is None:
        return "-"
    values = np.array(list(cell["scores"].values()))
    spread = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
    return f"{values.mean():.1f}{spread} (n={len(values)})"


def table(cells: dict[tuple[str, str, str], dict]) -> str:
    """Markdown: one row per dataset, one column per (agent, hubl) pair present."""
    columns = sorted({(agent, hubl) for _, agent, hubl in cells}, key=lambda c: (c[0] != "td3bc", c[0], c[1] != "none", c[1]))
    datasets = sorted({dataset for dataset, _, _ in cells})
    names = [agent.upper().replace("TD3BC", "TD3+BC") + ("" if hubl == "none" else f" + HUBL ({hubl})")
             for agent, hubl in columns]
    lines = ["| dataset | " + " | ".join(names) + " |", "|---" * (len(columns) + 1) + "|"]
    for dataset in datasets:
        lines.append(f"| {dataset} | " + " | ".join(format_cell(cells.get((dataset, *c))) for c in columns) + " |")
    steps = sorted({cell["step"] for cell in cells.values()})
    lines.append("")
    lines.append(f"Last evaluation at update(s) {', '.join(f'{s:,}' for s in steps)}; "
                 "mean ± sample std over seeds of each seed's final normalized score.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run directories or folders holding them")
    parser.add_argument("--last", type=int, default=1, help="evaluations averaged per seed (default: the last one)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.last < 1:
        parser.error(f"--last={args.last}: expected a positive number of evaluations")
    try:
        cells = collect(args.paths, args.last)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"offline_table: {e}")
    if not cells:
        sys.exit(f"offline_table: no offline runs with evaluations under {', '.join(args.paths)}")
    text = table(cells)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
