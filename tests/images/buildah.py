"""buildah as the image tests use it: the storage `make images` builds into, working
containers, commands run in an image's filesystem, and the layers an image would push.

No container runtime is involved: `buildah run --isolation chroot` runs a command in the
container's root filesystem, in the host's network namespace, as the image's user.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.fixtures.processes import REPO_ROOT

DOCKER_DIR = REPO_ROOT / "docker"


def load_docker_module(name: str) -> ModuleType:
    """Import docker/<name>.py (a script directory, not a package) as module `name`."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCKER_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pip_settings = load_docker_module("pip_settings")
images_tool = load_docker_module("images")


def buildah(*args: str, timeout: float = 300) -> str:
    """Run buildah on `make images`' storage; return stdout, fail with stderr."""
    result = subprocess.run(
        ["buildah", *args],
        env=images_tool.buildah_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"buildah {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result.stdout.strip()


def inspect_image(reference: str) -> dict[str, Any]:
    """`buildah inspect` of an image: config, history, manifest."""
    return json.loads(buildah("inspect", "--type", "image", reference))


def image_config(reference: str) -> dict[str, Any]:
    """The image's Docker config: User, Entrypoint, Cmd, Env, ExposedPorts, WorkingDir."""
    return inspect_image(reference)["Docker"]["config"]


def image_env(config: dict[str, Any]) -> dict[str, str]:
    """The image config's Env as a dict."""
    return dict(item.split("=", 1) for item in config.get("Env") or [])


def exposed_ports(config: dict[str, Any]) -> set[int]:
    """TCP ports the image EXPOSEs."""
    return {int(port.split("/")[0]) for port in config.get("ExposedPorts") or {}}


def effective_command(config: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """What Kubernetes runs: `command` replaces the Entrypoint, `args` the Cmd, and a
    `command` without `args` drops the image's Cmd."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*(config.get("Entrypoint") or []), *container.get("args", config.get("Cmd") or [])]


@dataclass
class WorkingContainer:
    """A buildah working container of an image: its root filesystem, writable, disposable."""

    name: str
    image: str

    @classmethod
    def create(cls, image: str) -> WorkingContainer:
        """`buildah from` the image (never pulls: it was built here)."""
        return cls(buildah("from", "--quiet", "--pull=never", image), image)

    def remove(self) -> None:
        """`buildah rm`: unmounts it and deletes its writable layer."""
        buildah("rm", self.name)

    def mount(self) -> Path:
        """The container's root filesystem on this machine (buildah mount)."""
        return Path(buildah("mount", self.name))

    def run_args(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
        read_only_root: str | None = None,
    ) -> list[str]:
        """The `buildah run` command line for `command` in this container.

        `volumes` maps host directories to writable mount points. `read_only_root`, the
        image's "uid:gid", runs `command` as a production pod with readOnlyRootFilesystem
        does: buildah starts it as root, with CAP_SYS_ADMIN, only to remount / read-only in
        its own mount namespace (after it has set up /etc/hosts, /proc and the volumes),
        then setpriv drops to that user with no capabilities. buildah has no read-only
        option of its own, and a root that is read-only before it starts breaks its set-up.
        """
        args = ["buildah", "run", "--isolation", "chroot"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        for host, target in (volumes or {}).items():
            args += ["--volume", f"{host}:{target}:rw"]
        if read_only_root is None:
            return [*args, self.name, "--", *command]
        uid, _, gid = read_only_root.partition(":")
        drop = (
            'mount -o remount,bind,ro / && uid="$1" gid="$2" && shift 2 && exec setpriv '
            '--reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --bounding-set=-all '
            '-- "$@"'
        )
        args += ["--user", "0:0", "--cap-add", "CAP_SYS_ADMIN"]
        return [*args, self.name, "--", "sh", "-c", drop, "sh", uid, gid or uid, *command]

    def run(
        self, command: Sequence[str], timeout: float = 300, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` to completion (see run_args for the keyword arguments)."""
        return subprocess.run(
            self.run_args(command, **kwargs),
            env=images_tool.buildah_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def export_layers(reference: str, directory: Path) -> list[Path]:
    """The image's layers as uncompressed tarballs, as `buildah push` would send them."""
    buildah("push", "--quiet", "--disable-compression", reference, f"dir:{directory}", timeout=900)
    manifest = json.loads((directory / "manifest.json").read_text())
    return [directory / layer["digest"].split(":", 1)[1] for layer in manifest["layers"]]


def layer_members(
    layers: Iterable[Path],
) -> Iterator[tuple[Path, tarfile.TarFile, tarfile.TarInfo]]:
    """Every entry of every layer tarball, whiteouts of deleted files included."""
    for layer in layers:
        with tarfile.open(layer) as archive:
            for member in archive:
                yield layer, archive, member


def find_in_layers(layers: Iterable[Path], needles: Sequence[bytes]) -> list[str]:
    """Where needles are: "<layer>:<path> has <needle>" for each regular file holding one."""
    found = []
    for layer, archive, member in layer_members(layers):
        if not member.isfile():
            continue
        data = archive.extractfile(member).read()  # type: ignore[union-attr]
        found += [
            f"{layer.name[:12]}:{member.name} has {needle[:40]!r}"
            for needle in needles
            if needle in data
        ]
    return found


# An installed TensorFlow, Keras or TF Serving API: the package directories and their
# dist-info under site-packages, and TensorFlow's shared libraries wherever they are.
TENSORFLOW_PATH = re.compile(
    r"site-packages/(tensorflow|tensorflow_cpu|tensorflow_serving|tensorflow_serving_api"
    r"|keras|tf_keras|tensorboard)([-_][^/]*\.dist-info)?(/|$)"
    r"|(^|/)lib(tensorflow|_pywrap_tensorflow)[^/]*\.so"
)


def tensorflow_paths(layers: Iterable[Path]) -> list[str]:
    """Paths in the layers that belong to an installed TensorFlow (see TENSORFLOW_PATH)."""
    return sorted(
        {
            member.name
            for _, _, member in layer_members(layers)
            if TENSORFLOW_PATH.search(member.name)
        }
    )
