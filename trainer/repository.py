"""Read the model repository's layout: `<repository>/<model>/<version>/`.

Deliberately free of TensorFlow so `python -m trainer list` answers instantly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_PATH = Path("assets.extra") / "metadata.json"
WARMUP_PATH = Path("assets.extra") / "tf_serving_warmup_requests"


@dataclass(frozen=True)
class VersionInfo:
    """One published version and what its metadata recorded."""

    model_name: str
    version: int
    path: Path
    metadata: dict[str, Any]

    @property
    def accuracy(self) -> float | None:
        value = self.metadata.get("metrics", {}).get("accuracy")
        return float(value) if value is not None else None


def list_versions(model_dir: Path) -> list[int]:
    """Return the published (numeric) versions under `model_dir`, ascending.

    Non-numeric entries are temporary exports in progress and are ignored, exactly as
    TF Serving's file-system poller ignores them.
    """
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    """Return the version a new export gets: the highest so far plus one (1 for none)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """Return a version's `assets.extra/metadata.json`, or {} when absent or unreadable."""
    try:
        return json.loads((version_dir / METADATA_PATH).read_text())
    except (OSError, ValueError):
        return {}


def latest_version(model_dir: Path) -> VersionInfo | None:
    """Return the highest published version of one model, or None."""
    versions = list_versions(model_dir)
    if not versions:
        return None
    path = model_dir / str(versions[-1])
    return VersionInfo(model_dir.name, versions[-1], path, read_metadata(path))


def describe_repository(repository: Path) -> dict[str, list[VersionInfo]]:
    """Return every model in the repository with its published versions."""
    if not repository.is_dir():
        return {}
    models: dict[str, list[VersionInfo]] = {}
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()):
        infos = [
            VersionInfo(model_dir.name, v, model_dir / str(v), read_metadata(model_dir / str(v)))
            for v in list_versions(model_dir)
        ]
        if infos:
            models[model_dir.name] = infos
    return models
