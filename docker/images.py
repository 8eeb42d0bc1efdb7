"""Build the images of docker/ with buildah: no daemon, no container runtime needed.

`make images` (mk/images.mk) runs this. Every `docker/<name>.Dockerfile` is an image,
built from the same file a Docker user builds, with its `<name>.Dockerfile.dockerignore`.
The base image is the `PYTHON_IMAGE` build argument: the Dockerfiles default to the
official `python:…-slim` image; here, where no container registry is reachable, a local
base is made from Debian packages with debootstrap and cached.

Everything lives under one git-ignored cache directory (.cache/images/ by default):

    storage.conf       containers-storage config: driver, graph root, run root
    <driver>/storage   buildah's images and layer cache; <driver>/run its run root
    tmp/               buildah's TMPDIR (bundles, layer staging)
    base/<key>.tar     debootstrap root filesystems, keyed by suite, packages and recipe
    pip/pip.conf       pip settings for the build, mounted as a build secret (0600)

    python docker/images.py base                      # print the local base, build if needed
    python docker/images.py build gateway trainer [--python-image IMAGE]
    python docker/images.py list gateway trainer      # the references `build` tags
    python docker/images.py push gateway trainer      # buildah push to the registry
    python docker/images.py env                       # shell exports to use buildah by hand
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pip_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO_ROOT / "docker"
CACHE_DIR = Path(os.environ.get("IMAGES_CACHE", REPO_ROOT / ".cache" / "images")).resolve()
DEFAULT_REGISTRY = "registry.example.com/mnist-serving"
DEFAULT_TAG = "0.1.0"

# The local base: what the official python:3.11-slim-bookworm image provides to the
# Dockerfiles (python, venv, CA certificates, bash, useradd), from Debian's packages.
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_NAME = "localhost/mnist-serving/python-base"
# Bump when build_base_rootfs changes what goes into the root filesystem.
BASE_RECIPE = 1
# What the host leaves in a debootstrap tree that no image should carry: its DNS and
# hostname (a runtime mounts its own), the downloaded .debs and the apt lists.
BASE_PRUNE = ("etc/resolv.conf", "etc/hostname", "var/cache/apt/archives", "var/lib/apt/lists")


def storage_driver() -> str:
    """overlay when the kernel's overlayfs can be mounted here (as root), else vfs.

    vfs copies the whole root filesystem for every build step, which made a cached
    gateway rebuild take minutes instead of seconds. IMAGE_STORAGE_DRIVER overrides.
    """
    chosen = os.environ.get("IMAGE_STORAGE_DRIVER")
    if chosen:
        return chosen
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "vfs"
    probe = CACHE_DIR / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    for part in ("lower", "upper", "work", "merged"):
        (probe / part).mkdir(parents=True)
    options = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(probe / "merged")],
        capture_output=True,
        check=False,
    )
    if mounted.returncode == 0:
        subprocess.run(["umount", str(probe / "merged")], check=False)
    shutil.rmtree(probe, ignore_errors=True)
    return "overlay" if mounted.returncode == 0 else "vfs"


def storage_conf() -> Path:
    """The storage.conf of the cache, written on first use (driver chosen once, then kept)."""
    path = CACHE_DIR / "storage.conf"
    if not path.exists():
        driver = storage_driver()
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# Written by docker/images.py: buildah's storage for this checkout.\n"
            "[storage]\n"
            f'driver = "{driver}"\n'
            f'graphroot = "{CACHE_DIR / driver / "storage"}"\n'
            f'runroot = "{CACHE_DIR / driver / "run"}"\n'
        )
    return path


def buildah_env() -> dict[str, str]:
    """Environment that points buildah at the cache's storage, chroot isolation, temp dir."""
    tmp = CACHE_DIR / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(storage_conf()),
        "BUILDAH_ISOLATION": "chroot",
        "TMPDIR": str(tmp),
    }


def buildah(*args: str, capture: bool = True, check: bool = True) -> str:
    """Run `buildah args...` on the cache's storage; return its stdout when captured."""
    result = subprocess.run(
        ["buildah", *args],
        env=buildah_env(),
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=check,
    )
    return (result.stdout or "").strip()


def image_exists(reference: str) -> bool:
    """Whether `reference` names an image in the cache's storage."""
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", reference],
        env=buildah_env(),
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def base_key() -> str:
    """Short hash of what makes the local base: suite, packages, recipe version."""
    recipe = {"suite": DEBIAN_SUITE, "packages": BASE_PACKAGES, "recipe": BASE_RECIPE}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def base_reference() -> str:
    """The local base's image reference, e.g. localhost/mnist-serving/python-base:bookworm-…"""
    return f"{BASE_NAME}:{DEBIAN_SUITE}-{base_key()}"


def build_base_rootfs(tarball: Path) -> None:
    """debootstrap a minimal root filesystem with BASE_PACKAGES into `tarball`."""
    rootfs = tarball.with_suffix(".rootfs")
    shutil.rmtree(rootfs, ignore_errors=True)
    print(f"images: debootstrap {DEBIAN_SUITE} + {', '.join(BASE_PACKAGES)} ({DEBIAN_MIRROR})")
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for relative in BASE_PRUNE:
        path = rootfs / relative
        if path.is_dir() and not path.is_symlink():
            # The files go; apt's own layout (partial/, lock) stays.
            for child in path.iterdir():
                if child.is_file() and child.name != "lock":
                    child.unlink()
        elif path.exists() or path.is_symlink():
            path.unlink()
    partial = tarball.with_suffix(".partial")
    # Device nodes come from the runtime, never from the image.
    subprocess.run(
        [
            "tar",
            "--numeric-owner",
            "--exclude=./dev/*",
            "-C",
            str(rootfs),
            "-cf",
            str(partial),
            ".",
        ],
        check=True,
    )
    partial.rename(tarball)
    shutil.rmtree(rootfs)


def build_base() -> str:
    """The local base image, built when missing (the tarball is kept); return its reference."""
    reference = base_reference()
    if image_exists(reference):
        return reference
    tarball = CACHE_DIR / "base" / f"{base_key()}.tar"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not tarball.exists():
        build_base_rootfs(tarball)
    container = buildah("from", "scratch")
    try:
        mountpoint = buildah("mount", container)
        subprocess.run(
            ["tar", "--numeric-owner", "-xpf", str(tarball), "-C", mountpoint], check=True
        )
        buildah("umount", container)
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            '["python3"]',
            container,
        )
        buildah("commit", "--quiet", "--format", "docker", container, reference)
    finally:
        buildah("rm", container, check=False)
    print(f"images: base {reference} in {time.monotonic() - started:.1f} s")
    return reference


def image_reference(name: str, registry: str, tag: str) -> str:
    """The reference `build` tags docker/<name>.Dockerfile with."""
    return f"{registry}/{name}:{tag}"


def image_size(reference: str) -> str:
    """The image's size as buildah reports it (uncompressed, like `docker images`)."""
    return json.loads(buildah("images", "--json", reference))[0]["size"]


@contextlib.contextmanager
def pip_secrets() -> Iterator[list[str]]:
    """--secret arguments carrying this machine's pip settings; the file is removed after."""
    directory = CACHE_DIR / "pip"
    try:
        yield pip_settings.write_secrets(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build(names: Sequence[str], registry: str, tag: str, python_image: str) -> None:
    """Build docker/<name>.Dockerfile for each name; print the time and size of each."""
    base = python_image or build_base()
    with pip_secrets() as secrets:
        for name in names:
            dockerfile = DOCKER_DIR / f"{name}.Dockerfile"
            if not dockerfile.is_file():
                raise SystemExit(f"images: no {dockerfile.relative_to(REPO_ROOT)}")
            reference = image_reference(name, registry, tag)
            ignore = dockerfile.with_name(f"{dockerfile.name}.dockerignore")
            args = ["build", "--quiet", "--layers", "--format", "docker", "--pull=false"]
            args += ["--isolation", "chroot", "--file", str(dockerfile)]
            if ignore.is_file():
                args += ["--ignorefile", str(ignore)]
            args += ["--build-arg", f"PYTHON_IMAGE={base}", *secrets, "--tag", reference]
            started = time.monotonic()
            buildah(*args, str(REPO_ROOT), capture=False)
            elapsed = time.monotonic() - started
            print(f"images: {reference} built in {elapsed:.1f} s, {image_size(reference)}")


def push(names: Sequence[str], registry: str, tag: str) -> None:
    """buildah push each built image to its registry (credentials: `buildah login`)."""
    for name in names:
        reference = image_reference(name, registry, tag)
        buildah("push", reference, f"docker://{reference}", capture=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=["base", "build", "list", "push", "env"])
    parser.add_argument("names", nargs="*", help="images: docker/<name>.Dockerfile")
    parser.add_argument("--registry", default=DEFAULT_REGISTRY)
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument(
        "--python-image", default="", help="base image; empty: the local Debian base"
    )
    args = parser.parse_intermixed_args(argv)
    if args.command in {"base", "build", "push"} and shutil.which("buildah") is None:
        print("images: buildah is not installed: run `make image-tools` (as root)")
        return 2
    if args.command == "base":
        print(build_base())
    elif args.command == "build":
        build(args.names, args.registry, args.tag, args.python_image)
    elif args.command == "list":
        for name in args.names:
            print(image_reference(name, args.registry, args.tag))
    elif args.command == "push":
        push(args.names, args.registry, args.tag)
    else:
        env = buildah_env()
        for key in ("CONTAINERS_STORAGE_CONF", "BUILDAH_ISOLATION", "TMPDIR"):
            print(f"export {key}={shlex.quote(env[key])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
