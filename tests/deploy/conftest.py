"""Fixtures of the tests of deploy/: the Docker engine, and the images they build once per run (the local base
images take about 20-30 s each with mmdebstrap, so every test of the session shares them).

What the tests measure (image sizes, start-up times) is printed at the end of the run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.clients import Docker
from tests.support.deploy import (
    REPO_ROOT,
    SERVICE_PACKAGES,
    BaseImages,
    build_base_image,
    build_context,
    build_image,
    deploy_tools_available,
    unique_name,
    weed_for_image,
)
from tests.support.services import require_service

MEASURED = pytest.StashKey[dict[str, str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    measured = config.stash.get(MEASURED, {})
    if measured:
        terminalreporter.section("deploy: measured")
        for name, value in measured.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def measured(request: pytest.FixtureRequest) -> dict[str, str]:
    """What the tests measured, by name, printed at the end of the run."""
    return request.config.stash.setdefault(MEASURED, {})


@pytest.fixture(scope="session")
def base_images(docker: Docker, measured: dict[str, str]) -> BaseImages:
    """Both local base images, made at once by deploy/base-image.sh."""
    require_service(deploy_tools_available(), "mmdebstrap (as root or with sudo)")
    tag = unique_name("registry-deploy/base")
    bases = BaseImages(python=f"{tag}:python", services=f"{tag}:services")
    with ThreadPoolExecutor(2) as pool:
        python = pool.submit(build_base_image, docker, bases.python)
        services = pool.submit(build_base_image, docker, bases.services, SERVICE_PACKAGES)
        measured["base image (mmdebstrap + docker import), s"] = f"{python.result():.1f}"
        measured["services base image (nginx-light, postgresql-15), s"] = f"{services.result():.1f}"
    return bases


@pytest.fixture(scope="session")
def registry_image(
    docker: Docker, base_images: BaseImages, tmp_path_factory: pytest.TempPathFactory, measured: dict[str, str]
) -> str:
    """The image of deploy/Dockerfile on the local Python base, installed from a wheelhouse of this host."""
    context = build_context(tmp_path_factory.mktemp("context"))
    tag = unique_name("registry-deploy/registry") + ":test"
    seconds = build_image(docker, tag, context, context / "deploy" / "Dockerfile", BASE=base_images.python)
    measured["registry image build (wheelhouse ready), s"] = f"{seconds:.1f}"
    return tag


@pytest.fixture(scope="session")
def services_image(docker: Docker, base_images: BaseImages, tmp_path_factory: pytest.TempPathFactory) -> str:
    """nginx, PostgreSQL and SeaweedFS in one local image (tests/deploy/services.Dockerfile)."""
    context = tmp_path_factory.mktemp("services")
    weed_for_image(context / "weed")
    tag = unique_name("registry-deploy/services") + ":test"
    build_image(docker, tag, context, REPO_ROOT / "tests" / "deploy" / "services.Dockerfile", BASE=base_images.services)
    return tag
