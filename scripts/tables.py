"""What the benchmark scripts share: markdown tables of their results, the --torch-threads flag, the process
that drives an official implementation."""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
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


class DriverProcess:
    """An official implementation driven in its own interpreter (`python`, e.g. one that has torch):
    `driver_source` is written to a scratch folder beside params.json and started there. The driver
    answers one JSON line when it is set up (`self.setup`) and one per command line sent to it, so it is
    idle while the other side is timed."""

    def __init__(self, python: str, driver_source: str, params: dict, prefix: str):
        self.scratch = tempfile.TemporaryDirectory(prefix=prefix)
        scratch = pathlib.Path(self.scratch.name)
        (scratch / "driver.py").write_text(driver_source)
        (scratch / "params.json").write_text(json.dumps(params))
        self.stderr = open(scratch / "stderr.txt", "w+")
        self.process = subprocess.Popen([python, str(scratch / "driver.py"), str(scratch / "params.json")],
                                        cwd=scratch, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True)
        self.setup = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            raise SystemExit(f"the official driver failed (exit {self.process.returncode}):\n"
                             f"{self.stderr.read()[-3000:]}")
        return json.loads(line)

    def command(self, text: str) -> dict:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self._answer()

    def finish(self) -> dict:
        result = self.command("finish")
        self.process.stdin.close()
        self.process.wait()
        self.stderr.close()
        self.scratch.cleanup()
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self.stderr.closed:
            self.stderr.close()
        self.scratch.cleanup()


def select_jax_device(device: str) -> None:
    """--device cpu|cuda of the side-by-side benchmarks: JAX on the CPU, or stop unless JAX has a GPU."""
    import jax

    if device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    elif jax.default_backend() != "gpu":
        raise SystemExit(f"--device cuda: JAX's backend is {jax.default_backend()!r}; install a CUDA build of jax")
