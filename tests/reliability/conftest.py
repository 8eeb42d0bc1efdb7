"""Fixtures shared by the reliability scenarios.

Scenarios that kill, signal or roll over servers get their own model servers, on private
copies of the trained repository; the hostile-input and fuzzing scenarios only send
requests, so they share one gateway over the session model server.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.serving import START_TIMEOUT, ModelServer, health_status, launch_model_server
from tests.reliability.stack import (
    MODEL,
    Gateway,
    launch_gateway,
    publish_copy,
    wait_ready,
    write_labelled_config,
)


@pytest.fixture(scope="session")
def shared_gateway(model_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway over the session `model_server`, for scenarios that do not stop it."""
    log_dir = tmp_path_factory.mktemp("reliability-gateway")
    gateway = launch_gateway(log_dir, model_server.grpc_target)
    wait_ready(gateway)
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="session")
def digits(mnist_test_images) -> np.ndarray:
    """Held-out real MNIST digits, uint8 [N, 28, 28]."""
    return mnist_test_images[0]


@dataclasses.dataclass
class ScenarioServers:
    """The two model servers the fault scenarios own, each on its own repository copy."""

    rollover_repository: Path
    rollover: ModelServer  # base path, polled every second: versions come and go
    labelled_repository: Path
    labelled: ModelServer  # models.config: version 1 labelled stable, 2 canary
    log_dir: Path


@pytest.fixture(scope="session")
def scenario_servers(
    trained_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScenarioServers]:
    """Start both scenario servers side by side, then wait for both.

    A model server's start-up is mostly one thread importing TensorFlow, so two starting
    together take little longer than one. The modules that use them stop them when done.
    """
    workdir = tmp_path_factory.mktemp("scenario-servers")
    rollover_repository = workdir / "rollover-repository"
    shutil.copytree(trained_repository, rollover_repository)
    labelled_repository = workdir / "labelled-repository"
    shutil.copytree(trained_repository, labelled_repository)
    publish_copy(labelled_repository / MODEL, 1, 2)
    config = write_labelled_config(
        workdir / "models.config", labelled_repository / MODEL, {"stable": 1, "canary": 2}
    )
    rollover = launch_model_server(
        workdir,
        base_path=rollover_repository / MODEL,
        wait="none",
        file_system_poll_wait_seconds=1,
    )
    labelled = launch_model_server(workdir, config_file=config, wait="none")
    try:
        for server in (rollover, labelled):
            target = server.grpc_target
            server.process.wait_ready(lambda t=target: health_status(t) == "SERVING", START_TIMEOUT)
        yield ScenarioServers(rollover_repository, rollover, labelled_repository, labelled, workdir)
    finally:
        rollover.process.stop()
        labelled.process.stop()
