"""Fixtures of the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.core import ServerCore
from serving.server_config import BatchingOptions
from tests.serving.helpers import build_spin_model, model_config, publish_copy, server_config_for


@pytest.fixture
def core(trained_repository: Path, tmp_path: Path) -> Iterator[ServerCore]:
    """`mnist` (a copy of the trained model, label stable=1) and `spin` (slow), batching on."""
    mnist, spin = tmp_path / "mnist", tmp_path / "spin"
    publish_copy(trained_repository / "mnist" / "1", mnist, 1)
    build_spin_model(spin / "1")
    config = server_config_for(
        model_config(("mnist", mnist), ("spin", spin), stable=1),
        BatchingOptions(max_batch_size=64, batch_timeout_micros=5000),
        max_request_tensor_bytes=1 << 20,
    )
    core = ServerCore(config)
    core.load_initial()
    yield core
    core.close()
