"""The data plane in-process: requests always release the version they held, decoding
leaves the event loop when it is large, and the method-name check follows its flag."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from serving.data_plane import INLINE_DECODE_BYTES, ModelSpec, PredictRequest
from serving.errors import InternalError, InvalidArgumentError, NotFoundError

pytestmark = pytest.mark.slow


def _predict(core, spec: ModelSpec, inputs: dict):
    return asyncio.run(core.data_plane.predict(PredictRequest(spec, inputs)))


def test_every_request_releases_the_version_it_held(core):
    images = np.zeros((1, 28, 28), np.float32)
    _predict(core, ModelSpec("mnist"), {"images": images})
    for spec, inputs, error in [
        (ModelSpec("mnist", signature_name="nope"), {"images": images}, Exception),
        (ModelSpec("mnist"), {"images": images.astype(np.int64)}, InvalidArgumentError),
        (ModelSpec("mnist"), {"pixels": images}, InvalidArgumentError),
        (ModelSpec("mnist", version=9), {"images": images}, NotFoundError),
    ]:
        with pytest.raises(error):
            _predict(core, spec, inputs)
    assert core.manager.resolve("mnist").inflight == 0
    assert core.metrics.inflight_requests.value("mnist") == 0


def test_large_decodes_run_in_the_executor_and_small_ones_on_the_loop(core):
    async def thread_names():
        plane = core.data_plane
        small = await plane.offload(lambda: threading.current_thread().name, cost=1000)
        large = await plane.offload(
            lambda: threading.current_thread().name, cost=INLINE_DECODE_BYTES + 1
        )
        return small, large

    small, large = asyncio.run(thread_names())
    assert small == threading.current_thread().name
    assert large.startswith("tf")


def test_the_method_name_check_is_off_unless_asked_for(core):
    images = np.zeros((1, 28, 28), np.float32)
    signature = core.manager.resolve("mnist").signature("")
    signature.definition.method_name = "custom/method"
    assert _predict(core, ModelSpec("mnist"), {"images": images}).version == 1
    core.data_plane._check_method_names = True
    with pytest.raises(InternalError, match="Was: custom/method"):
        _predict(core, ModelSpec("mnist"), {"images": images})
