"""Figures of a benchmark run: printed as tables and written to bench/results/latest.json.

Each figure has a dotted key (`ingest.ratio_vs_bare`); the JSON nests along the dots and the
tables print the same keys, so a number in the README can be traced to both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"
REPO = RESULTS_DIR.parent.parent


def progress(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


class Results:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.units: dict[str, str] = {}

    def set(self, key: str, value: Any, unit: str = "") -> None:
        *path, last = key.split(".")
        node = self.data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
        self.units[key] = unit

    def get(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def table(self, prefix: str, title: str) -> str:
        rows = [(k, self.get(k), u) for k, u in self.units.items() if k.startswith(prefix + ".")]
        width = max((len(k) for k, _, _ in rows), default=10)
        lines = [title, "-" * len(title)]
        for key, value, unit in rows:
            lines.append(f"  {key:<{width}}  {_show(value):>12}  {unit}")
        return "\n".join(lines)

    def rows_table(self, key: str, columns: list[str]) -> str:
        """A list of dicts (`e2e.steps`) as one line per item."""
        items = self.get(key) or []
        widths = [max(len(c), 8) for c in columns]
        header = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
        lines = [f"  {key}:", "  " + header]
        for item in items:
            cells = [_show(item.get(c)).rjust(w) for c, w in zip(columns, widths, strict=True)]
            lines.append("  " + "  ".join(cells))
        return "\n".join(lines)

    def write(self, path: Path = LATEST) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        return path


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _first_line(["wrk", "--version"]),
        "commit": _first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        # Uncommitted changes in the tree: the figures are not exactly that commit's.
        "tree_modified": bool(_first_line(["git", "-C", str(REPO), "status", "--porcelain"])),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None
