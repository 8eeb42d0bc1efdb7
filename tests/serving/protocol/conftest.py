"""In-process fixtures for the Open Inference Protocol adapters: a ServerCore serving
`v2_repository` (tests/fixtures/serving.py) with the label `stable` -> 1 and batching on,
as the REST and gRPC adapters reach it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.core import ServerCore
from serving.server_config import BatchingOptions
from tests.serving.helpers import model_config, server_config_for

# Small enough that a test can go over it with a 2 MB tensor; mnist requests are 3 KB.
MAX_REQUEST_TENSOR_BYTES = 1 << 20


@pytest.fixture(scope="module")
def v2_core(v2_repository: Path) -> Iterator[ServerCore]:
    """A loaded core over `v2_repository`, batching as in production (one per module)."""
    models = model_config(
        ("mnist", v2_repository / "mnist"), ("tfs_corpus", v2_repository / "tfs_corpus"), stable=1
    )
    config = server_config_for(
        models,
        BatchingOptions(max_batch_size=64, batch_timeout_micros=5000),
        max_request_tensor_bytes=MAX_REQUEST_TENSOR_BYTES,
    )
    core = ServerCore(config)
    core.load_initial()
    yield core
    core.close()
