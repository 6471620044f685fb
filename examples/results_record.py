"""The JSON record an example writes with ``--record PATH``: one run, rendered by docs/make_results.py.

A record holds what ``docs/results.md`` shows of one run: the experiment (``table1``,
``order_search``, ``table2``, ``figure3``), the setting, the command, the seeds, the commit and
the machine, and one row per variant with the numbers the example printed (unrounded; the page
rounds them as the example's own table does).
"""
from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import torch

from pyro_causal.resources import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def machine_text() -> str:
    """Where a run ran: architecture, CPU and kernel capability, torch (a fit repeats bit for bit only there)."""
    return f"{platform.machine()}, {cpu_description()}, torch {torch.__version__}"


def current_commit() -> str:
    """Short hash of the checkout's HEAD, with ``+dirty`` if tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def write_record(path: str, experiment: str, setting: str, command: str, seeds: str, rows: List[dict],
                 jobs: int = 1, note: Optional[str] = None, **extra) -> dict:
    """Write one run's record to ``path`` (JSON) and return it."""
    record = {
        "experiment": experiment,
        "setting": setting,
        "command": command,
        "seeds": seeds,
        "commit": current_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{machine_text()}, 1 thread per fit, {jobs} at a time",
        "rows": rows,
        **extra,
    }
    if note:
        record["note"] = note
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return record
