"""`make monitoring-bins` never fails the build: without a way to install, it says how."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.fixtures.processes import REPO_ROOT


def test_monitoring_bins_prints_the_install_command_when_it_cannot_install(
    tmp_path: Path,
) -> None:
    # A PATH with make and id but no prometheus, pushgateway or apt-get.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("make", "id"):
        (bindir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(
        [str(bindir / "make"), "-s", "--no-print-directory", "monitoring-bins"],
        cwd=REPO_ROOT,
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Prometheus/Pushgateway not found" in result.stdout
    assert "apt-get install --no-install-recommends prometheus prometheus-pushgateway" in (
        result.stdout
    )
    assert "make up starts the stack without them" in result.stdout
