"""The trainer's Job and CronJob command lines are ones the real trainer CLI accepts.

Each runs `python -m trainer` with the manifest's args and env against a repository that
already holds a version, plus --if-empty, so the trainer parses everything, then exits
without training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.manifests import REPO_ROOT, Manifest, one, pod_template

MOUNT = "/models"


@pytest.mark.parametrize(
    ("kind", "name"), [("Job", "trainer-initial"), ("CronJob", "trainer-retrain")]
)
def test_trainer_cli_accepts_the_manifest_command_line(
    rendered: dict[str, list[Manifest]], kind: str, name: str, tmp_path: Path
) -> None:
    container = pod_template(one(rendered["gpu"], kind, name))["spec"]["containers"][0]
    run_manifest_command(container, tmp_path)


def run_manifest_command(container: Manifest, tmp_path: Path) -> None:
    """Run the trainer with a container's args and env against a repository holding a
    version, with --if-empty: it parses everything, then exits without training."""
    repository = tmp_path / "models"
    (repository / "mnist" / "1").mkdir(parents=True)
    args = [arg.replace(f"={MOUNT}", f"={repository}") for arg in container["args"]]
    if "--if-empty" not in args:
        args.append("--if-empty")
    env = {var["name"]: var["value"] for var in container["env"] if "value" in var}
    env.update(MODEL_REPOSITORY=str(repository), HOME=str(tmp_path), MPLCONFIGDIR=str(tmp_path))
    # Nothing listens there: a push attempt would fail fast rather than reach a real one.
    env["PUSHGATEWAY_URL"] = "http://127.0.0.1:9"
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"trainer {args} refused:\n{result.stdout}\n{result.stderr}"
    assert sorted(p.name for p in (repository / "mnist").iterdir()) == ["1"]


def test_trainer_cli_rejects_an_unknown_flag(tmp_path: Path) -> None:
    """The check above can fail: a misspelled flag is an error, not ignored."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "train",
            "--min-acuracy=0.9",
            "--if-empty",
            f"--model-repository={tmp_path}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
