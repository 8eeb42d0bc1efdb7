"""ServerCore in-process: reload validated once, the config-file poll, version lifecycle
(corrupt, incomplete, failing warmup, deleted), and unloading that frees batch queues."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from serving.core import ServerCore
from serving.data_plane import ModelSpec, PredictRequest
from serving.errors import InvalidArgumentError, NotFoundError
from serving.manager import VersionState
from serving.server_config import BatchingOptions
from tests.serving.helpers import (
    FakeLoader,
    fake_version,
    model_config,
    predict_request,
    publish_copy,
    scaled_images,
    server_config_for,
)


def _fake_core(tmp_path: Path, **flags) -> tuple[ServerCore, Path]:
    model_dir = tmp_path / "mnist"
    fake_version(model_dir, 1)
    core = ServerCore(
        server_config_for(model_config(("mnist", model_dir)), **flags), loader=FakeLoader()
    )
    core.load_initial()
    return core, model_dir


def test_reload_refuses_what_server_core_refuses_and_keeps_the_old_config(tmp_path):
    core, model_dir = _fake_core(tmp_path)
    bad = model_config(("mnist", model_dir))
    bad.model_config_list.config[0].base_path = "relative/mnist"
    with pytest.raises(InvalidArgumentError, match="to have an absolute path or URI"):
        core.reload(bad)
    assert core.manager.resolve("mnist").version == 1
    core.close()


def test_config_file_poll_applies_a_changed_file_once_and_ignores_a_broken_one(tmp_path):
    config_file = tmp_path / "models.config"
    core, model_dir = _fake_core(tmp_path, model_config_file=str(config_file))
    other = tmp_path / "other"
    fake_version(other, 4)
    config_file.write_text(
        text_format.MessageToString(model_config(("mnist", model_dir), ("other", other)))
    )
    assert core.reload_config_file_if_changed()
    assert core.manager.resolve("other").version == 4
    assert not core.reload_config_file_if_changed()  # same text: nothing to do
    config_file.write_text("model_config_list { bogus: 1 }")
    assert not core.reload_config_file_if_changed()
    assert core.manager.model_names() == ["mnist", "other"]  # the previous config stays
    core.close()


def test_version_gauges_follow_the_manager(tmp_path):
    core, model_dir = _fake_core(tmp_path)
    text = core.metrics.render()
    assert ':tensorflow:serving:embedded:loaded_versions{model_name="mnist"} 1' in text
    fake_version(model_dir, 2)
    core.manager.poll()
    text = core.metrics.render()
    assert (
        ':tensorflow:serving:embedded:model_version_state{model_name="mnist",version="1"} 50'
        in text
    )
    assert (
        ':tensorflow:serving:embedded:model_version_state{model_name="mnist",version="2"} 30'
        in text
    )
    core.close()


# -- real SavedModels -------------------------------------------------------------------


@pytest.fixture
def real_core(trained_repository: Path, tmp_path: Path):
    """A core on a copy of the trained model (version 1), batching as in production."""
    model_dir = tmp_path / "rolling"
    publish_copy(trained_repository / "mnist" / "1", model_dir, 1)
    batching = BatchingOptions(max_batch_size=64, batch_timeout_micros=5000)
    core = ServerCore(server_config_for(model_config(("rolling", model_dir)), batching))
    core.load_initial()
    yield core, model_dir
    core.close()


def _state(core: ServerCore, version: int) -> VersionState | None:
    statuses = {s.version: s for s in core.manager.statuses("rolling")}
    return statuses[version].state if version in statuses else None


def _predict(core: ServerCore, images: np.ndarray):
    request = PredictRequest(ModelSpec("rolling"), {"images": images})
    return asyncio.run(core.data_plane.predict(request))


def test_a_corrupt_version_never_replaces_the_serving_one(real_core, mnist_test_images):
    core, model_dir = real_core
    corrupt = model_dir / ".tmp-corrupt"
    shutil.copytree(model_dir / "1", corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"\x08\x01 this is not a SavedModel \xff" * 50)
    corrupt.rename(model_dir / "2")
    core.manager.poll()
    status = {s.version: s for s in core.manager.statuses("rolling")}[2]
    assert status.state == VersionState.END
    assert status.error is not None and status.error.message
    assert _predict(core, scaled_images(mnist_test_images[0], 1)).version == 1
    assert core.manager.all_models_available()


def test_an_incomplete_version_fails_then_loads_once_complete(real_core, mnist_test_images):
    core, model_dir = real_core
    incomplete = model_dir / "2"
    shutil.copytree(model_dir / "1" / "variables", incomplete / "variables")
    core.manager.poll()
    status = {s.version: s for s in core.manager.statuses("rolling")}[2]
    assert status.state == VersionState.END
    assert isinstance(status.error, NotFoundError)
    for item in (model_dir / "1").iterdir():
        if item.name != "variables":
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, incomplete / item.name)
    core.manager.poll()
    assert _state(core, 2) == VersionState.AVAILABLE
    assert _state(core, 1) == VersionState.END
    assert _predict(core, scaled_images(mnist_test_images[0], 1)).version == 2


def test_a_failing_warmup_keeps_the_version_out_of_service(real_core, mnist_test_images):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    core, model_dir = real_core
    staging = model_dir / ".tmp-bad-warmup"
    shutil.copytree(model_dir / "1", staging)
    request = predict_request(
        scaled_images(mnist_test_images[0], 1), signature_name="missing", name="rolling"
    )
    record = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(staging / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(record.SerializeToString())
    staging.rename(model_dir / "2")
    core.manager.poll()
    status = {s.version: s for s in core.manager.statuses("rolling")}[2]
    assert status.state == VersionState.END
    assert status.error.code.name == "FAILED_PRECONDITION"
    assert "missing" in status.error.message
    assert _predict(core, scaled_images(mnist_test_images[0], 1)).version == 1


def test_a_deleted_version_is_unloaded_and_the_policy_falls_back(real_core, mnist_test_images):
    core, model_dir = real_core
    publish_copy(model_dir / "1", model_dir, 2)
    core.manager.poll()
    assert _predict(core, scaled_images(mnist_test_images[0], 1)).version == 2
    shutil.rmtree(model_dir / "2")
    core.manager.poll()
    assert _state(core, 2) == VersionState.END
    assert _state(core, 1) == VersionState.AVAILABLE
    assert _predict(core, scaled_images(mnist_test_images[0], 1)).version == 1


def test_unloading_frees_the_session_and_the_batch_queues(real_core, mnist_test_images):
    core, model_dir = real_core
    images = scaled_images(mnist_test_images[0], 2)
    _predict(core, images)  # creates version 1's batch queue
    old = core.manager.resolve("rolling")
    assert len(core.batcher) == 1
    publish_copy(model_dir / "1", model_dir, 2)
    core.manager.poll()
    assert old.closed
    assert _predict(core, images).version == 2
    assert len(core.batcher) == 1  # version 2's queue only: version 1's was dropped
    reference = weakref.ref(old)
    del old
    gc.collect()
    assert reference() is None


def test_frozen_heap_still_lets_an_unloaded_version_go(trained_repository, tmp_path):
    """The server freezes long-lived objects out of the collector; a version unloaded
    after that must still be collected, cycles and all."""
    import gc

    model_dir = tmp_path / "rolling"
    publish_copy(trained_repository / "mnist" / "1", model_dir, 1)
    core = ServerCore(server_config_for(model_config(("rolling", model_dir))), compact_heap=True)
    try:
        core.load_initial()
        assert gc.get_freeze_count() > 0
        servable = core.manager.resolve("rolling")
        # The graph's operations point back at it: only the collector frees it.
        graph = weakref.ref(servable._session.graph)
        del servable
        publish_copy(model_dir / "1", model_dir, 2)
        core.poll()
        assert core.manager.resolve("rolling").version == 2
        gc.collect()
        assert graph() is None
        assert gc.get_freeze_count() > 0  # frozen again after the change
    finally:
        core.close()
        gc.unfreeze()
