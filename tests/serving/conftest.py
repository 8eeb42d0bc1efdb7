"""The serving tests' shared multi-model server.

One embedded server for the lifecycle and server tests (each server start costs seconds
of TensorFlow import and model loading): `mnist` (versions 1 and 2, label stable=1),
`rolling` (version 1; the lifecycle tests publish, corrupt and delete its versions) and
`spin` (a deliberately slow model). Batching and metrics on; the file system and
models.config are polled every second; REST requests time out after 50 ms (only `spin`
takes that long). The last test to use it (test_server.py's drain test) stops it with SIGTERM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import text_format

from tests.fixtures.serving import SERVING_CONFIG_DIR, ModelServer, launch_model_server
from tests.serving.helpers import build_spin_model, publish_copy, server_config


@pytest.fixture(scope="session")
def multi_model_server(
    trained_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModelServer, Path]]:
    """(server, root): root holds each model's base path and models.config."""
    root = tmp_path_factory.mktemp("multi-model")
    trained = trained_repository / "mnist" / "1"
    for version in (1, 2):
        publish_copy(trained, root / "mnist", version)
    publish_copy(trained, root / "rolling", 1)
    build_spin_model(root / "spin" / "1")
    config_file = root / "models.config"
    config_file.write_text(text_format.MessageToString(server_config(root, {"stable": 1})))
    server = launch_model_server(
        root,
        config_file=config_file,
        file_system_poll_wait_seconds=1,
        model_config_file_poll_wait_seconds=1,
        enable_batching=True,
        batching_parameters_file=SERVING_CONFIG_DIR / "batching.config",
        monitoring_config_file=SERVING_CONFIG_DIR / "monitoring.config",
        rest_api_timeout_in_ms=50,
    )
    yield server, root
    server.process.stop()
