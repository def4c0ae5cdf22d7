"""Docker images for the push/pull workloads: the docker CLI, a tiny busybox base, fresh images of random layers.

Everything made here is recorded in a `Run`, so `bench.session.cleanup` removes exactly that and nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import MIB

if TYPE_CHECKING:
    from bench.session import Run

BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "true", "sleep", "sha256sum")
WRITE_PIECE = 8 * MIB


@dataclass(frozen=True)
class ImageShape:
    """An image of fresh random layers on the busybox base: one layer per entry in `layer_mib`."""

    layer_mib: tuple[int, ...]

    @property
    def name(self) -> str:
        """A label such as `1x200MiB` or `3x100MiB`."""
        sizes = set(self.layer_mib)
        each = f"{self.layer_mib[0]}MiB" if len(sizes) == 1 else "+".join(f"{s}MiB" for s in self.layer_mib)
        return f"{len(self.layer_mib)}x{each}"


def docker(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a docker CLI command, capturing its output; raise with its stderr when `check` and it fails."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def docker_build_env() -> dict[str, str]:
    """The environment for `docker build`: the classic builder when the buildx plugin is missing."""
    env = dict(os.environ)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"
    return env


def rootfs_tar(path: Path) -> None:
    """Write a minimal root filesystem tar: static busybox plus a few applet symlinks and /tmp."""
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)


def import_base(run: Run) -> str:
    """`docker import` the busybox rootfs as this run's base image; returns its tag."""
    tag = f"bench-pushpull-base-{run.suffix}:latest"
    tar_path = run.tmp / "rootfs.tar"
    rootfs_tar(tar_path)
    docker("import", "--change", 'CMD ["/bin/sh"]', str(tar_path), tag)
    run.tags.add(tag)
    tar_path.unlink()
    return tag


def write_random(path: Path, size: int) -> None:
    """Fill `path` with `size` random bytes (incompressible, unique per call)."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            piece = min(WRITE_PIECE, left)
            f.write(os.urandom(piece))
            left -= piece


def build_image(run: Run, base: str, shape: ImageShape, tag: str, env: dict[str, str]) -> str:
    """Build `tag` FROM `base` with one COPY layer of fresh random bytes per layer of `shape`; returns its id."""
    context = run.tmp / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir()
    lines = [f"FROM {base}"]
    for i, mib in enumerate(shape.layer_mib):
        write_random(context / f"payload-{i}.bin", mib * MIB)
        lines.append(f"COPY payload-{i}.bin /payload-{i}.bin")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    done = subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], capture_output=True, text=True, env=env)
    shutil.rmtree(context, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"docker build failed: {done.stderr.strip()[-2000:]}")
    image_id = image_id_of(tag)
    run.tags.add(tag)
    run.image_ids.add(image_id)
    return image_id


def image_id_of(ref: str) -> str:
    """The local image id of `ref`, or '' when Docker does not have it."""
    done = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def remove_image(image_id: str) -> None:
    """Remove an image by id with all its tags, so its layers leave the local store; verify it is gone."""
    docker("rmi", "-f", image_id)
    if image_id_of(image_id):
        raise RuntimeError(f"image {image_id} still present after docker rmi -f")


def remove_images(run: Run) -> None:
    """Remove exactly the images and tags `run` created (never a prune)."""
    for image_id in run.image_ids:
        docker("rmi", "-f", image_id, check=False)
    for tag in run.tags:
        if image_id_of(tag):
            docker("rmi", tag, check=False)
