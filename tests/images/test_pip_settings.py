"""How this machine's pip settings reach an image build: as two build secrets, with only
the settings that mean something inside the build, mounted by every pip step."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.images.buildah import DOCKER_DIR, pip_settings
from tests.k8s.test_docker import instructions

DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
SECRET_MOUNTS = (
    "--mount=type=secret,id=pip_conf,target=/run/secrets/pip.conf",
    f"--mount=type=secret,id=pip_cert,target={pip_settings.CERT_IN_BUILD}",
)


def test_remote_indexes_are_kept_and_local_ones_dropped(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    config = {
        "index-url": "https://user:token@pypi.example.com/simple",
        "extra-index-url": "file:///opt/pypi/simple https://mirror.example.com/simple /srv/wheels",
        "find-links": "/opt/wheels",
        "constraint": "/etc/xdg/pip/constraints.txt",
        "timeout": "180",
        "cert": str(bundle),
    }
    text, cert = pip_settings.build_settings(config, {})
    assert text.splitlines() == [
        "[global]",
        "index-url = https://user:token@pypi.example.com/simple",
        "extra-index-url = https://mirror.example.com/simple",
        "timeout = 180",
        f"cert = {pip_settings.CERT_IN_BUILD}",
    ]
    assert cert == bundle


def test_ssl_cert_file_names_the_bundle_when_pip_has_no_cert(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    text, cert = pip_settings.build_settings({}, {"SSL_CERT_FILE": str(bundle)})
    assert cert == bundle and f"cert = {pip_settings.CERT_IN_BUILD}" in text
    # A bundle that does not exist here is not passed on.
    assert pip_settings.build_settings({}, {"SSL_CERT_FILE": "/nonexistent.pem"}) == (
        "[global]\n",
        None,
    )


def test_secrets_file_is_private_and_named_in_the_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(pip_settings, "read_pip_config", lambda: {"cert": str(bundle)})
    arguments = pip_settings.write_secrets(tmp_path / "out")
    pip_conf = tmp_path / "out" / "pip.conf"
    assert stat.S_IMODE(pip_conf.stat().st_mode) == 0o600
    assert arguments == [
        f"--secret=id=pip_conf,src={pip_conf}",
        f"--secret=id=pip_cert,src={bundle}",
    ]


def test_read_pip_config_sees_pip_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip's own `pip config list` is the source, env winning over files, as in pip."""
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example.com/simple")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "42")
    config = pip_settings.read_pip_config()
    assert config["index-url"] == "https://pypi.example.com/simple"
    assert config["timeout"] == "42"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_pip_step_mounts_the_secrets_and_the_constraints(dockerfile: Path) -> None:
    steps = [rest for keyword, rest in instructions(dockerfile) if keyword == "RUN"]
    pip_steps = [rest for rest in steps if "pip install" in rest]
    assert pip_steps, f"{dockerfile.name} installs nothing with pip"
    for step in pip_steps:
        for mount in SECRET_MOUNTS:
            assert mount in step, f"{dockerfile.name}: a pip step lacks {mount}"
        assert "PIP_CONFIG_FILE=/run/secrets/pip.conf" in step
        assert "--constraint" in step, f"{dockerfile.name}: a pip step ignores the constraints"
