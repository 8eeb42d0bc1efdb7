"""This machine's pip settings, as build secrets for the Dockerfiles' pip steps.

`make images` runs this before each build. It writes a pip.conf holding only the settings
a build can use (index URLs, trusted hosts, proxy, timeout, retries, and the CA bundle's
path inside the build), and prints the `--secret` arguments that mount that file and the
CA bundle for the RUN steps that call pip. Secrets are mounted for one RUN and never
written to a layer, so an index token or a proxy's CA stays out of the image.

Left out on purpose: local paths (`file://` indexes, find-links, this machine's own
constraint file), which do not exist inside the build, and `no-cache-dir`-style
switches the Dockerfiles set themselves.

    python docker/pip_settings.py <output-dir>   # prints: --secret id=pip_conf,src=...
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

# Where the Dockerfiles mount the two secrets (RUN --mount=type=secret,...,target=...).
CERT_IN_BUILD = "/run/secrets/pip-cert.pem"
# pip options that mean the same inside the build as on this machine.
PORTABLE_OPTIONS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries")
# pip reads `default-timeout` from PIP_DEFAULT_TIMEOUT but `timeout` from pip.conf.
ALIASES = {"default-timeout": "timeout"}
# Where a CA bundle may be named when pip's own `cert` is not set.
CERT_ENV_FALLBACKS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
CONFIG_LINE = re.compile(r"^(?P<section>[^.]+)\.(?P<key>[\w-]+)='(?P<value>.*)'$")


def read_pip_config(python: str = sys.executable) -> dict[str, str]:
    """pip's effective settings (files and PIP_* env, env last so it wins), by option name."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    ).stdout
    from_files: dict[str, str] = {}
    from_env: dict[str, str] = {}
    for line in listed.splitlines():
        match = CONFIG_LINE.match(line.strip())
        if match and match["section"] in {"global", "install", ":env:"}:
            key = ALIASES.get(match["key"], match["key"])
            target = from_env if match["section"] == ":env:" else from_files
            target[key] = match["value"]
    return {**from_files, **from_env}


def remote_only(value: str) -> str:
    """Drop local (file:// or plain path) entries from a whitespace-separated URL list."""
    return " ".join(url for url in value.split() if re.match(r"https?://", url))


def build_settings(config: dict[str, str], environ: dict[str, str]) -> tuple[str, Path | None]:
    """(pip.conf text for the build, CA bundle on this machine or None)."""
    lines = ["[global]"]
    for option in PORTABLE_OPTIONS:
        value = config.get(option, "")
        if option.endswith("index-url"):
            value = remote_only(value)
        if value:
            lines.append(f"{option} = {value}")
    cert_name = config.get("cert") or next(
        (environ[name] for name in CERT_ENV_FALLBACKS if environ.get(name)), ""
    )
    cert = Path(cert_name) if cert_name and Path(cert_name).is_file() else None
    if cert is not None:
        lines.append(f"cert = {CERT_IN_BUILD}")
    return "\n".join(lines) + "\n", cert


def write_secrets(output_dir: Path) -> list[str]:
    """Write pip.conf (mode 0600) under `output_dir`; return the build's --secret arguments."""
    text, cert = build_settings(read_pip_config(), dict(os.environ))
    output_dir.mkdir(parents=True, exist_ok=True)
    pip_conf = output_dir / "pip.conf"
    # Index URLs may carry credentials: readable by this user only.
    descriptor = os.open(pip_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    arguments = [f"--secret=id=pip_conf,src={pip_conf.resolve()}"]
    if cert is not None:
        arguments.append(f"--secret=id=pip_cert,src={cert.resolve()}")
    return arguments


def main() -> int:
    """Write the settings to argv[1] and print the --secret arguments for the build."""
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(shlex.join(write_secrets(Path(sys.argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
