"""The audit log: one JSON line per decision, with the evidence and thresholds behind it."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


class AuditLog:
    """Appends decisions to a JSONL file (`-`: standard output, for a container's log)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        if target != "-":
            Path(target).parent.mkdir(parents=True, exist_ok=True)

    def record(self, model: str, version: int | None, decision: str, **details: Any) -> dict:
        """Write one decision and return the entry written."""
        entry = {"time": time.time(), "model": model, "version": version, "decision": decision}
        entry.update(details)
        line = json.dumps(entry, sort_keys=True, default=str)
        with self._lock:
            if self.target == "-":
                print(line, file=sys.stdout, flush=True)
            else:
                with open(self.target, "a") as handle:
                    handle.write(line + "\n")
        return entry

    def entries(self, model: str | None = None) -> list[dict]:
        """Every entry written to the file (for `rollout status` and the tests)."""
        if self.target == "-" or not Path(self.target).exists():
            return []
        lines = Path(self.target).read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [entry for entry in found if model is None or entry["model"] == model]
