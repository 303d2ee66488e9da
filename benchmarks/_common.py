"""Shared by the benchmark scripts: where data and results live, and the JSON they write."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_gb, 1), "python": platform.python_version(),
            "tensorflow": version("tensorflow"), "keras": version("keras"), "optuna": version("optuna")}


def write_result(name: str, figures: dict) -> Path:
    """Write RESULTS/<name>.json with the figures, the command that produced them and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    path.write_text(json.dumps({"benchmark": name, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
                                "machine": machine(), "figures": figures}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def resident_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def peak_resident_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
